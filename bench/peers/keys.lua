-- bench/peers/keys.lua: each request is PATH .. a key drawn at random (uniformly, with
-- replacement) from KEYS_FILE, one already percent-encoded key per line.
--   wrk ... -s keys.lua URL -- KEYS_FILE PATH [STOP_AFTER [SEED]]
-- STOP_AFTER > 0: each wrk thread stops once it has received that many responses and prints
-- WRK_THREAD_DONE (wrk has no request-count flag; -d is then only an upper bound, and the
-- driver sends SIGINT once every thread is done). SEED (default 1) seeds each
-- thread's generator with SEED * 1000 + its number, so runs are repeatable in their keys.
local dir = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
dofile(dir .. 'report.lua')

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set('thread_number', counter)
end

local keys, path, stop_after, received = {}, '/', 0, 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then keys[#keys + 1] = line end
  end
  if #keys == 0 then error('keys.lua: no keys in ' .. tostring(args[1])) end
  path = args[2]
  stop_after = tonumber(args[3] or '0')
  math.randomseed(tonumber(args[4] or '1') * 1000 + (thread_number or 0))
  if stop_after > 0 then
    response = function(status, headers, body)
      received = received + 1
      if received == stop_after then
        -- wrk's main thread sleeps for the whole -d duration: tell the driver, which sends
        -- SIGINT (wrk then joins its threads and reports at once).
        io.write('WRK_THREAD_DONE\n')
        io.flush()
        wrk.thread:stop()
      end
    end
  end
end

function request()
  return wrk.format(nil, path .. keys[math.random(#keys)])
end

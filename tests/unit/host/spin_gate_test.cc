// The host's spin decision for a new worker (SpinForWorkers), with no process.
#include "gtest/gtest.h"
#include "host/generation.h"

namespace mp::host {
namespace {

TEST(SpinForTest, WorkersSpinOnlyWhileEveryOneAndTheHostHaveACore) {
  EXPECT_EQ(SpinForWorkers(2000, 1, 2), 2000u);  // one worker and the host on 2 CPUs
  EXPECT_EQ(SpinForWorkers(2000, 2, 2), 0u);     // two workers and the host on 2 CPUs
  EXPECT_EQ(SpinForWorkers(2000, 7, 8), 2000u);
  EXPECT_EQ(SpinForWorkers(2000, 8, 8), 0u);
  EXPECT_EQ(SpinForWorkers(0, 0, 64), 0u);  // the config said never
}

}  // namespace
}  // namespace mp::host

// The mphost version: `mphost --version`, `mpctl status`, mphost_build_info.
#pragma once

namespace mp::host {

inline constexpr char kMphostVersion[] = "0.2.0";

}  // namespace mp::host

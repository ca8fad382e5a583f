#include "search/blas.h"

#include <cblas.h>

#include <cstdlib>
#include <cstring>
#include <initializer_list>

// OpenBLAS's own start-up and shut-down of its kernel table in DYNAMIC_ARCH builds (Debian's);
// weak, so that a build without them links and leaves OpenBLAS alone.
extern "C" void gotoblas_dynamic_init(void) __attribute__((weak));
extern "C" void gotoblas_dynamic_quit(void) __attribute__((weak));

namespace nearlabel {
namespace {

bool Retarget() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return false;
  if (gotoblas_dynamic_init == nullptr || gotoblas_dynamic_quit == nullptr) return false;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq")) {
    return false;
  }
  const char* core = openblas_get_corename();
  for (const char* fast : {"SkylakeX", "Cooperlake", "SapphireRapids"}) {
    if (std::strcmp(core, fast) == 0) return false;
  }
  // OpenBLAS reads the core from the environment when it starts: restart it with one set,
  // then take the variable away again so that child processes start as they would have.
  gotoblas_dynamic_quit();
  setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
  gotoblas_dynamic_init();
  unsetenv("OPENBLAS_CORETYPE");
  return true;
}

}  // namespace

void UseFastestBlasKernels() {
  static const bool retargeted = Retarget();
  (void)retargeted;
}

}  // namespace nearlabel

// Running a call on a thread with a stack sized for it.
#pragma once

#include <cstddef>
#include <functional>

namespace nearlabel {

// Runs `fn` to completion on a new thread whose stack is `stack_bytes` (reserved, not
// committed: the kernel backs only the pages the call touches) and returns when it is done.
// For library code whose recursion depth depends on input nearlabel does not control (ONNX
// Runtime's start-up recurses once per byte of /proc/self/cmdline). Falls back to running
// `fn` on the calling thread if no such thread can be started.
void RunWithStack(size_t stack_bytes, const std::function<void()>& fn);

// Bytes of this process's command line (/proc/self/cmdline); 0 when it cannot be read.
size_t CommandLineBytes();

}  // namespace nearlabel

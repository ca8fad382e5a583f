#include "common/large_stack.h"

#include <pthread.h>

#include <cstdio>

namespace nearlabel {

namespace {
void* Trampoline(void* arg) {
  (*static_cast<const std::function<void()>*>(arg))();
  return nullptr;
}
}  // namespace

void RunWithStack(size_t stack_bytes, const std::function<void()>& fn) {
  pthread_attr_t attr;
  pthread_t thread;
  bool started = false;
  if (pthread_attr_init(&attr) == 0) {
    started =
        pthread_attr_setstacksize(&attr, stack_bytes) == 0 &&
        pthread_create(&thread, &attr, Trampoline, const_cast<std::function<void()>*>(&fn)) == 0;
    pthread_attr_destroy(&attr);
  }
  if (!started) {
    fn();
    return;
  }
  pthread_join(thread, nullptr);
}

size_t CommandLineBytes() {
  std::FILE* f = std::fopen("/proc/self/cmdline", "rb");
  if (!f) return 0;
  size_t total = 0;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) total += n;
  std::fclose(f);
  return total;
}

}  // namespace nearlabel

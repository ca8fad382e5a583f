// Fault injection for crash tests: CrashPoint("name") kills the process with SIGKILL when the
// environment variable NEARLABEL_CRASH_POINT equals "name", so a test can stop a save or an
// ingest exactly between two steps and check what a real crash there would leave behind.
#pragma once

namespace nearlabel {

// Thread-safe. Costs one getenv when the variable is unset.
void CrashPoint(const char* name);

}  // namespace nearlabel

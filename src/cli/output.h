// Terminal output for the CLI: aligned tables and a progress bar.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace nearlabel::cli {

// Prints rows under a header with columns padded to their widest cell (by code points).
void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows);

// A one-line progress bar with rate and ETA on stderr, drawn only when stderr is a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(std::string what);
  void Update(size_t done, size_t total);
  void Finish();
  // Erases the drawn bar, so a message can be printed on its line (the next Update redraws).
  void Clear();

 private:
  std::string what_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool drawn_ = false;
};

std::string FormatDouble(double v, int precision);

// `text` safe to print on a terminal: control characters (C0, DEL and the C1 range, where
// ESC and CSI start escape sequences a dataset could use to rewrite the screen), and bytes
// that are not UTF-8, are written as \n, \t, \xNN or \u009b; all other text is kept,
// Korean and other scripts included. JSON output needs none of this (it escapes them).
std::string TerminalSafe(const std::string& text);

}  // namespace nearlabel::cli

// Status and Result<T>: how nearlabel reports expected failures (bad input, missing files,
// mismatched models) without exceptions. Programming errors still assert.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace nearlabel {

class Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,  // the caller passed something malformed (bad option, bad JSON)
    kNotFound,         // a file, model or row does not exist
    kCorruption,       // data exists but cannot be read (corrupt image, bad store)
    kIOError,          // the operating system refused a read or write
    kMismatch,         // store and model (or vectors) do not fit together
    kUnsupported,      // a valid input this build cannot handle
    kInternal,         // a library failed in an unexpected way
  };

  Status() = default;
  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string msg) {
    return {Code::kInvalidArgument, std::move(msg)};
  }
  static Status NotFound(std::string msg) { return {Code::kNotFound, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {Code::kCorruption, std::move(msg)}; }
  static Status IOError(std::string msg) { return {Code::kIOError, std::move(msg)}; }
  static Status Mismatch(std::string msg) { return {Code::kMismatch, std::move(msg)}; }
  static Status Unsupported(std::string msg) { return {Code::kUnsupported, std::move(msg)}; }
  static Status Internal(std::string msg) { return {Code::kInternal, std::move(msg)}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  // The human-readable reason, one line, without a code prefix.
  const std::string& message() const { return message_; }
  // "<code name>: <message>", or "OK".
  std::string ToString() const;
  // Returns a copy whose message is "<context>: <message>".
  Status WithContext(const std::string& context) const;

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

// Either a value or a non-OK Status.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok() && "Result built from an OK status has no value");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace nearlabel

// Returns early from a function returning Status or Result<T> when `expr` fails.
#define NL_RETURN_IF_ERROR(expr)         \
  do {                                   \
    ::nearlabel::Status _nl_st = (expr); \
    if (!_nl_st.ok()) return _nl_st;     \
  } while (0)

#define NL_CONCAT_INNER(a, b) a##b
#define NL_CONCAT(a, b) NL_CONCAT_INNER(a, b)
// `NL_ASSIGN_OR_RETURN(auto x, F());` binds x to F()'s value or returns its Status.
#define NL_ASSIGN_OR_RETURN(lhs, expr) \
  NL_ASSIGN_OR_RETURN_IMPL(NL_CONCAT(_nl_res_, __LINE__), lhs, expr)
#define NL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()

// The part of ONNX Runtime's C API that nearlabel calls, declared here because no ORT headers
// are installed: the library is loaded at run time (dlopen) from the npm package
// onnxruntime-node or from $ONNXRUNTIME_LIB.
//
// ORT exports one symbol, OrtGetApiBase(). Its GetApi(version) returns a table of function
// pointers (struct OrtApi in ORT's onnxruntime_c_api.h). ORT's ABI policy makes that table
// append-only: an entry never moves, so a table declared up to entry 130 stays valid for
// every later release. Only the entries we call are named; the gaps are padding, and a
// static_assert pins every named entry to its index in the public header.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nearlabel::ort {

// Opaque handles.
struct OrtStatus;
struct OrtEnv;
struct OrtSession;
struct OrtSessionOptions;
struct OrtRunOptions;
struct OrtValue;
struct OrtMemoryInfo;
struct OrtAllocator;
struct OrtTypeInfo;
struct OrtTensorTypeAndShapeInfo;

// Enum values as in the public header.
enum OrtLoggingLevel : int { kLogVerbose = 0, kLogInfo, kLogWarning, kLogError, kLogFatal };
enum ElementType : int { kElementFloat = 1 };  // ONNXTensorElementDataType
enum GraphOptimization : int { kOptimizeAll = 99 };
enum AllocatorType : int { kDeviceAllocator = 0, kArenaAllocator = 1 };
enum MemType : int { kMemTypeDefault = 0 };

// The version of the table layout we ask for: entries 0..130 exist since API version 5
// (ORT 1.5); asking for an older version than the library's is allowed.
constexpr uint32_t kApiVersion = 5;

using StatusPtr = OrtStatus*;

struct OrtApi {
  StatusPtr (*CreateStatus)(int code, const char* msg);                            // 0
  int (*GetErrorCode)(const OrtStatus* status);                                    // 1
  const char* (*GetErrorMessage)(const OrtStatus* status);                         // 2
  StatusPtr (*CreateEnv)(OrtLoggingLevel level, const char* logid, OrtEnv** out);  // 3
  void* unused_4_7[4];
  StatusPtr (*CreateSessionFromArray)(const OrtEnv* env, const void* data, size_t length,
                                      const OrtSessionOptions* options,
                                      OrtSession** out);  // 8
  StatusPtr (*Run)(OrtSession* session, const OrtRunOptions* run_options,
                   const char* const* input_names, const OrtValue* const* inputs,
                   size_t input_count, const char* const* output_names, size_t output_count,
                   OrtValue** outputs);                        // 9
  StatusPtr (*CreateSessionOptions)(OrtSessionOptions** out);  // 10
  void* unused_11_22[12];
  StatusPtr (*SetSessionGraphOptimizationLevel)(OrtSessionOptions* options, int level);  // 23
  StatusPtr (*SetIntraOpNumThreads)(OrtSessionOptions* options, int threads);            // 24
  StatusPtr (*SetInterOpNumThreads)(OrtSessionOptions* options, int threads);            // 25
  void* unused_26_29[4];
  StatusPtr (*SessionGetInputCount)(const OrtSession* session, size_t* out);   // 30
  StatusPtr (*SessionGetOutputCount)(const OrtSession* session, size_t* out);  // 31
  void* unused_32;
  StatusPtr (*SessionGetInputTypeInfo)(const OrtSession* session, size_t index,
                                       OrtTypeInfo** out);  // 33
  void* unused_34_35[2];
  StatusPtr (*SessionGetInputName)(const OrtSession* session, size_t index, OrtAllocator* allocator,
                                   char** out);  // 36
  void* unused_37_48[12];
  StatusPtr (*CreateTensorWithDataAsOrtValue)(const OrtMemoryInfo* info, void* data,
                                              size_t data_bytes, const int64_t* shape,
                                              size_t shape_len, int element_type,
                                              OrtValue** out);  // 49
  void* unused_50;
  StatusPtr (*GetTensorMutableData)(OrtValue* value, void** out);  // 51
  void* unused_52_54[3];
  StatusPtr (*CastTypeInfoToTensorInfo)(const OrtTypeInfo* info,
                                        const OrtTensorTypeAndShapeInfo** out);  // 55
  void* unused_56_59[4];
  StatusPtr (*GetTensorElementType)(const OrtTensorTypeAndShapeInfo* info, int* out);   // 60
  StatusPtr (*GetDimensionsCount)(const OrtTensorTypeAndShapeInfo* info, size_t* out);  // 61
  StatusPtr (*GetDimensions)(const OrtTensorTypeAndShapeInfo* info, int64_t* out,
                             size_t count);  // 62
  void* unused_63_64[2];
  StatusPtr (*GetTensorTypeAndShape)(const OrtValue* value,
                                     OrtTensorTypeAndShapeInfo** out);  // 65
  void* unused_66_68[3];
  StatusPtr (*CreateCpuMemoryInfo)(int allocator_type, int mem_type,
                                   OrtMemoryInfo** out);  // 69
  void* unused_70_75[6];
  StatusPtr (*AllocatorFree)(OrtAllocator* allocator, void* p);  // 76
  void* unused_77;
  StatusPtr (*GetAllocatorWithDefaultOptions)(OrtAllocator** out);  // 78
  void* unused_79_91[13];
  void (*ReleaseEnv)(OrtEnv*);                // 92
  void (*ReleaseStatus)(OrtStatus*);          // 93
  void (*ReleaseMemoryInfo)(OrtMemoryInfo*);  // 94
  void (*ReleaseSession)(OrtSession*);        // 95
  void (*ReleaseValue)(OrtValue*);            // 96
  void* unused_97;
  void (*ReleaseTypeInfo)(OrtTypeInfo*);                              // 98
  void (*ReleaseTensorTypeAndShapeInfo)(OrtTensorTypeAndShapeInfo*);  // 99
  void (*ReleaseSessionOptions)(OrtSessionOptions*);                  // 100
  void* unused_101_129[29];
  StatusPtr (*AddSessionConfigEntry)(OrtSessionOptions* options, const char* key,
                                     const char* value);  // 130
};

struct OrtApiBase {
  const OrtApi* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};

using GetApiBaseFn = const OrtApiBase* (*)();

#define NL_ORT_ENTRY(name, index) \
  static_assert(offsetof(OrtApi, name) == (index) * sizeof(void*), #name " must be entry " #index)
NL_ORT_ENTRY(CreateEnv, 3);
NL_ORT_ENTRY(CreateSessionFromArray, 8);
NL_ORT_ENTRY(CreateSessionOptions, 10);
NL_ORT_ENTRY(SetSessionGraphOptimizationLevel, 23);
NL_ORT_ENTRY(SessionGetInputCount, 30);
NL_ORT_ENTRY(SessionGetInputTypeInfo, 33);
NL_ORT_ENTRY(SessionGetInputName, 36);
NL_ORT_ENTRY(CreateTensorWithDataAsOrtValue, 49);
NL_ORT_ENTRY(GetTensorMutableData, 51);
NL_ORT_ENTRY(CastTypeInfoToTensorInfo, 55);
NL_ORT_ENTRY(GetTensorElementType, 60);
NL_ORT_ENTRY(GetTensorTypeAndShape, 65);
NL_ORT_ENTRY(CreateCpuMemoryInfo, 69);
NL_ORT_ENTRY(AllocatorFree, 76);
NL_ORT_ENTRY(GetAllocatorWithDefaultOptions, 78);
NL_ORT_ENTRY(ReleaseEnv, 92);
NL_ORT_ENTRY(ReleaseValue, 96);
NL_ORT_ENTRY(ReleaseTypeInfo, 98);
NL_ORT_ENTRY(ReleaseSessionOptions, 100);
NL_ORT_ENTRY(AddSessionConfigEntry, 130);
#undef NL_ORT_ENTRY

}  // namespace nearlabel::ort

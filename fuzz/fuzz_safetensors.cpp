// fuzz_safetensors.cpp: libFuzzer entry for the safetensors target (fuzz/targets.h).
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nimbus::fuzz::safetensors(data, size);
  return 0;
}

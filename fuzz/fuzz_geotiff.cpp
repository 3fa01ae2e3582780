// fuzz_geotiff.cpp: libFuzzer entry for the geotiff target (fuzz/targets.h).
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nimbus::fuzz::geotiff(data, size);
  return 0;
}

// safetensors.cpp: checked reader, atomic writer (format in safetensors.h).
#include "engine/io/safetensors.h"

#include "engine/io/fnv1a.h"
#include "engine/io/input_files.h"
#include "engine/io/output_path.h"
#include "engine/io/temp_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/io/json.h"

namespace nimbus {

const Tensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

const Tensor& SafetensorsFile::at(const std::string& name) const {
  const Tensor* t = find(name);
  NIMBUS_CHECK(t, "safetensors: no tensor named '", name, "'");
  return *t;
}

namespace {
// Writes all of `bytes` to fd; false (errno set) on an error.
bool write_all(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += size_t(w);
  }
  return true;
}
}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  refuse_if_input(path);
  // A path that exists and is no regular file (a device, a pipe, /dev/stdout) is written to
  // directly: renaming a temporary over it would replace the device with a plain file.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    NIMBUS_CHECK(!S_ISDIR(st.st_mode), path, ": is a folder, not a file");
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    NIMBUS_CHECK(fd >= 0, path, ": cannot open for writing: ", std::strerror(errno));
    const bool ok = write_all(fd, bytes);
    const int err = errno;
    const bool closed = ::close(fd) == 0;
    NIMBUS_CHECK(ok && closed, path, ": write failed: ", std::strerror(ok ? errno : err));
    return;
  }
  const std::string target = atomic_output_path(path);  // a link's file, the link kept
  std::string tmp = target + ".tmp." + std::to_string(::getpid());
  const TempFile guard(tmp);  // removed if a signal stops the process before the rename
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  NIMBUS_CHECK(fd >= 0, path, ": cannot create temporary file ", tmp, ": ", std::strerror(errno));
  if (!write_all(fd, bytes)) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(str(path, ": write failed: ", std::strerror(err)));
  }
  bool ok = ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  keep_target_mode(tmp, target);
  if (!ok || std::rename(tmp.c_str(), target.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw Error(str(path, ": could not finish writing: ", std::strerror(err)));
  }
  sync_folder_of(target);
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const Metadata& metadata) {
  // The header as a JSON object: __metadata__ first, then each tensor in order.
  nlohmann::ordered_json root = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    root["__metadata__"] = std::move(meta);
  }
  std::set<std::string> names;
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    NIMBUS_CHECK(names.insert(name).second, path, ": duplicate tensor name '", name, "'");
    NIMBUS_CHECK(name != "__metadata__", path, ": a tensor cannot be named __metadata__");
    const size_t nbytes = t.nbytes();  // a tensor is stored in its own dtype: F32 or BF16
    std::vector<int64_t> shape;
    for (int d = 0; d < t.ndim(); ++d) shape.push_back(t.size(d));
    root[name] = {{"dtype", t.dtype() == DType::BF16 ? "BF16" : "F32"},
                  {"shape", shape},
                  {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string header;
  try {
    header = root.dump();
  } catch (const nlohmann::ordered_json::exception& e) {  // a name or metadata string that is not UTF-8
    throw Error(str(path, ": cannot write the safetensors header: ", e.what()));
  }
  while ((8 + header.size()) % 8) header += ' ';  // align the data to 8 bytes, as the spec recommends
  std::string out;
  out.reserve(8 + header.size() + offset);
  uint64_t n = header.size();
  for (int b = 0; b < 8; ++b) out += char((n >> (8 * b)) & 0xFF);
  out += header;
  for (const auto& [name, t] : tensors) {
    const Tensor h = t.to(Device::CPU);
    if (h.dtype() == DType::BF16) {
      out.append(reinterpret_cast<const char*>(h.data_bf16()), h.nbytes());
    } else {
      out.append(reinterpret_cast<const char*>(h.data()), h.nbytes());
    }
  }
  write_file_atomic(path, out);
}

namespace {
size_t dtype_size(const std::string& dt) {
  if (dt == "F32" || dt == "I32") return 4;
  if (dt == "F64" || dt == "I64") return 8;
  if (dt == "F16" || dt == "BF16" || dt == "I16") return 2;
  if (dt == "U8" || dt == "BOOL" || dt == "I8") return 1;
  return 0;
}

float half_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) bits = sign;
    else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) { man <<= 1; --exp; }
      bits = sign | (exp << 23) | ((man & 0x3FF) << 13);
    }
  } else if (exp == 31) bits = sign | 0x7F800000 | (man << 13);
  else bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <typename T>
T load_le(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // x86-64 and aarch64 are little-endian
  return v;
}

void convert(const std::string& dt, const unsigned char* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const unsigned char* p = src + i * dtype_size(dt);
    if (dt == "F32") dst[i] = load_le<float>(p);
    else if (dt == "F64") dst[i] = float(load_le<double>(p));
    else if (dt == "I64") dst[i] = float(load_le<int64_t>(p));
    else if (dt == "I32") dst[i] = float(load_le<int32_t>(p));
    else if (dt == "I16") dst[i] = float(load_le<int16_t>(p));
    else if (dt == "I8") dst[i] = float(int8_t(*p));
    else if (dt == "U8" || dt == "BOOL") dst[i] = float(*p);
    else if (dt == "F16") dst[i] = half_to_float(load_le<uint16_t>(p));
    else if (dt == "BF16") {
      uint32_t bits = uint32_t(load_le<uint16_t>(p)) << 16;
      std::memcpy(&dst[i], &bits, 4);
    }
  }
}
}  // namespace

namespace {
SafetensorsFile load_unchecked(const std::string& path, uint64_t* content_fnv1a);
}  // namespace

// Memory exhaustion (sizes are checked against the file before allocating, but a large valid file can
// still exceed this machine): an Error naming the file, not std::bad_alloc.
SafetensorsFile load_safetensors(const std::string& path, uint64_t* content_fnv1a) {
  try {
    return load_unchecked(path, content_fnv1a);
  } catch (const std::bad_alloc&) {
    throw Error(str(path, ": out of memory while loading this safetensors file"));
  }
}

namespace {
// The weight files a user may hand us instead, by their first 8 bytes; nullptr for anything else.
const char* other_weight_format(const unsigned char* b) {
  static const unsigned char kHdf5[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  if (std::memcmp(b, kHdf5, 8) == 0)
    return "HDF5 (a Keras checkpoint?): scripts/import_keras_dsen2cr.py converts Meraner et al.'s DSen2-CR "
           "weights into a model file";
  if (b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4)
    return "a zip archive (torch.save's format since PyTorch 1.6?): save the model's state_dict with "
           "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')";
  // A pickle's protocol opcode, then more opcodes: not a short header length's zero upper bytes.
  if (b[0] == 0x80 && b[1] >= 2 && b[1] <= 5 && (b[2] | b[3] | b[4] | b[5] | b[6] | b[7]) != 0)
    return "a Python pickle (an older torch.save?): save the model's state_dict with "
           "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')";
  if (b[0] == 0x93 && std::memcmp(b + 1, "NUMPY", 5) == 0) return "a NumPy .npy array, not a model's weights";
  return nullptr;
}

SafetensorsFile load_unchecked(const std::string& path, uint64_t* content_fnv1a) {
  std::ifstream f(path, std::ios::binary);
  NIMBUS_CHECK(f, path, ": cannot open safetensors file: ", std::strerror(errno));
  f.seekg(0, std::ios::end);
  const uint64_t file_size = uint64_t(f.tellg());
  f.seekg(0);
  NIMBUS_CHECK(file_size >= 8, path, ": not a safetensors file (", file_size, " bytes, shorter than the 8-byte header)");
  unsigned char lenb[8];
  f.read(reinterpret_cast<char*>(lenb), 8);
  uint64_t hlen = load_le<uint64_t>(lenb);
  if (hlen > file_size - 8 || hlen >= (uint64_t(100) << 20)) {
    // Not safetensors: say what it is when it is another framework's weights, and how to convert them.
    if (const char* other = other_weight_format(lenb))
      throw Error(str(path, ": not a safetensors file but ", other));
    throw Error(str(path, ": corrupt safetensors header length ", hlen, " (file has ", file_size, " bytes)"));
  }
  std::string header(size_t(hlen), '\0');
  f.read(header.data(), std::streamsize(hlen));
  NIMBUS_CHECK(f, path, ": truncated safetensors header");
  json::Value root;
  try {
    root = json::parse(header);
  } catch (const Error& e) {
    throw Error(str(path, ": corrupt safetensors header: ", e.what()));
  }
  NIMBUS_CHECK(root.is(json::Value::Type::Object), path, ": safetensors header is not a JSON object");
  const uint64_t data_size = file_size - 8 - hlen;
  std::vector<unsigned char> data(static_cast<size_t>(data_size));
  f.read(reinterpret_cast<char*>(data.data()), std::streamsize(data_size));
  NIMBUS_CHECK(f || data_size == 0, path, ": could not read tensor data");
  if (content_fnv1a) {  // the bytes in file order: length, header, data
    Fnv1a h;
    h.bytes(lenb, 8);
    h.bytes(header.data(), header.size());
    h.bytes(data.data(), data.size());
    *content_fnv1a = h.h;
  }

  SafetensorsFile out;
  struct Span {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Span> spans;
  for (const auto& [name, v] : root.obj) {
    if (name == "__metadata__") {
      NIMBUS_CHECK(v.is(json::Value::Type::Object), path, ": __metadata__ is not an object");
      for (const auto& [k, mv] : v.obj) {
        NIMBUS_CHECK(mv.is(json::Value::Type::String), path, ": metadata value for '", k, "' is not a string");
        out.metadata[k] = mv.s;
      }
      continue;
    }
    const json::Value* dt = v.get("dtype");
    const json::Value* shp = v.get("shape");
    const json::Value* off = v.get("data_offsets");
    NIMBUS_CHECK(dt && dt->is(json::Value::Type::String) && shp && shp->is(json::Value::Type::Array) && off &&
                     off->is(json::Value::Type::Array) && off->arr.size() == 2,
                 path, ": tensor '", name, "' lacks dtype, shape or data_offsets");
    size_t esize = dtype_size(dt->s);
    NIMBUS_CHECK(esize, path, ": tensor '", name, "' has unsupported dtype ", dt->s);
    std::vector<int64_t> dims;
    uint64_t numel = 1;
    for (const auto& d : shp->arr) {
      NIMBUS_CHECK(d.is(json::Value::Type::Number) && d.num >= 0 && d.num < 1e12 && d.num == double(int64_t(d.num)),
                   path, ": tensor '", name, "' has a bad shape");
      dims.push_back(int64_t(d.num));
      // The tensor must fit in the data section: checked per dimension, so the product never wraps
      // (a wrapped count would pass the size check below and be written past its buffer).
      NIMBUS_CHECK(d.num == 0 || numel <= data_size / esize / uint64_t(d.num), path, ": tensor '", name,
                   "' has a shape that needs more bytes than the file's ", data_size, "-byte data section");
      numel *= uint64_t(d.num);
    }
    NIMBUS_CHECK(dims.size() <= size_t(Shape::kMaxDims), path, ": tensor '", name, "' has ", dims.size(), " dims (max ",
                 Shape::kMaxDims, ")");
    for (const json::Value& o : off->arr)
      NIMBUS_CHECK(o.is(json::Value::Type::Number) && o.num >= 0 && o.num < 9e18 && o.num == double(int64_t(o.num)),
                   path, ": tensor '",
                   name, "' has data_offsets that are not two byte counts");
    double b = off->arr[0].num, e = off->arr[1].num;
    NIMBUS_CHECK(e >= b && e <= double(data_size), path, ": tensor '", name, "' data_offsets [", b, ",", e,
                 "] outside the ", data_size, "-byte data section (truncated file?)");
    NIMBUS_CHECK(uint64_t(e - b) == numel * esize, path, ": tensor '", name, "' has ", uint64_t(e - b),
                 " bytes but its shape and dtype need ", numel * esize);
    Tensor t = Tensor::empty(Shape(dims));
    convert(dt->s, data.data() + uint64_t(b), t.data(), size_t(numel));
    out.dtypes[name] = dt->s;
    out.tensors.emplace_back(name, t);
    spans.push_back({uint64_t(b), uint64_t(e), name});
  }
  // The format's rule: the tensors cover the data section exactly, without overlaps or holes (a file
  // with either is damaged, or two files in one).
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) {
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  uint64_t at = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    NIMBUS_CHECK(spans[i].begin >= at, path, ": tensor '", spans[i].name, "' overlaps tensor '", spans[i - 1].name,
                 "' in the data section (bytes ", spans[i].begin, " to ", at, ")");
    NIMBUS_CHECK(spans[i].begin == at, path, ": bytes ", at, " to ", spans[i].begin,
                 " of the data section belong to no tensor");
    at = spans[i].end;
  }
  NIMBUS_CHECK(at == data_size, path, ": bytes ", at, " to ", data_size, " of the data section belong to no tensor");
  return out;
}
}  // namespace

}  // namespace nimbus

// SPDX-License-Identifier: Apache-2.0
#include "models/hdf5_file.h"

#include <hdf5.h>

#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

namespace estimator::models::hdf5 {

// Handle stores ids and close functions in fixed-width types so that the header does not
// include hdf5.h; these are the types HDF5 1.10 and later use.
static_assert(std::is_same_v<hid_t, std::int64_t>, "HDF5 1.10+ (64-bit hid_t) is required");
static_assert(std::is_same_v<herr_t, int>);

namespace {

std::mutex& library_mutex() {
  static std::mutex m;
  return m;
}

// The innermost entry of this thread's error stack (the function that detected the
// problem, e.g. "truncated file: eof = 1000, ..."), then clears the stack.
herr_t keep_innermost(unsigned n, const H5E_error2_t* err, void* data) {
  if (n != 0) return 0;
  auto* out = static_cast<std::string*>(data);
  if (err->desc != nullptr && err->desc[0] != '\0') {
    *out = err->desc;
  } else {
    char msg[256] = {};
    H5E_type_t type{};
    if (H5Eget_msg(err->min_num, &type, msg, sizeof msg) > 0) *out = msg;
  }
  return 0;
}

std::string take_library_error() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, &text);
  H5Eclear2(H5E_DEFAULT);
  return text;
}

Status failure(std::string where, std::string_view problem, bool with_library_error) {
  where += ": ";
  where += problem;
  if (with_library_error) {
    const std::string detail = take_library_error();
    if (!detail.empty()) where += " (HDF5: " + detail + ")";
  }
  return Status(Code::kInvalidArgument, std::move(where));
}

std::string_view class_name(H5T_class_t c) {
  switch (c) {
    case H5T_INTEGER:
      return "integer";
    case H5T_FLOAT:
      return "float";
    case H5T_TIME:
      return "time";
    case H5T_STRING:
      return "string";
    case H5T_BITFIELD:
      return "bitfield";
    case H5T_OPAQUE:
      return "opaque";
    case H5T_COMPOUND:
      return "compound";
    case H5T_REFERENCE:
      return "reference";
    case H5T_ENUM:
      return "enum";
    case H5T_VLEN:
      return "variable-length sequence";
    case H5T_ARRAY:
      return "array";
    default:
      return "unknown";
  }
}

// Frees the strings H5Aread allocated for variable-length strings. H5Treclaim is the name
// from 1.12 on; Debian's 1.10 declares it but does not export it.
void reclaim_strings(hid_t type, hid_t space, void* buffer) {
#if H5_VERSION_GE(1, 12, 0)
  H5Treclaim(type, space, H5P_DEFAULT, buffer);
#else
  H5Dvlen_reclaim(type, space, H5P_DEFAULT, buffer);
#endif
}

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t slash = path.find('/', start);
    const std::size_t end = slash == std::string_view::npos ? path.size() : slash;
    if (end > start) parts.push_back(path.substr(start, end - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return parts;
}

}  // namespace

// ---- Handle ----

Handle::Handle(Handle&& other) noexcept
    : id_(std::exchange(other.id_, -1)), close_(std::exchange(other.close_, nullptr)) {}

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = std::exchange(other.id_, -1);
    close_ = std::exchange(other.close_, nullptr);
  }
  return *this;
}

Handle::~Handle() { reset(); }

void Handle::reset() {
  if (id_ >= 0 && close_ != nullptr) close_(id_);
  id_ = -1;
  close_ = nullptr;
}

// ---- Group ----

std::string Group::where() const { return *file_ + ": " + path_; }

std::string Group::child_path(std::string_view relative) const {
  std::string p = path_;
  if (p.empty() || p.back() != '/') p += '/';
  p += relative;
  return p;
}

bool Group::has_attribute(std::string_view name) const {
  const std::string n(name);
  const htri_t r = H5Aexists(handle_.get(), n.c_str());
  if (r < 0) H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

Result<std::vector<std::string>> Group::string_list_attribute(std::string_view name) const {
  const std::string n(name);
  const std::string at = where() + " attribute " + n;
  if (!has_attribute(name)) return failure(at, "missing", false);
  const Handle attr(H5Aopen(handle_.get(), n.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) return failure(at, "cannot be opened", true);
  const Handle type(H5Aget_type(attr.get()), H5Tclose);
  const Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (!type.valid() || !space.valid()) return failure(at, "cannot be inspected", true);
  const hssize_t points = H5Sget_simple_extent_npoints(space.get());
  if (points < 0) return failure(at, "has an unreadable shape", true);
  const auto count = static_cast<std::size_t>(points);

  const H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_STRING) {
    if (count == 0) return std::vector<std::string>{};
    return failure(at,
                   "expected strings, found " + std::to_string(count) + " values of class " +
                       std::string(class_name(cls)),
                   false);
  }

  const H5T_cset_t cset = H5Tget_cset(type.get());
  const Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
  if (!mem.valid() || H5Tset_cset(mem.get(), cset) < 0) {
    return failure(at, "cannot build a string type", true);
  }
  std::vector<std::string> out;
  out.reserve(count);

  const htri_t variable = H5Tis_variable_str(type.get());
  if (variable < 0) return failure(at, "has an unreadable string type", true);
  if (variable > 0) {
    if (H5Tset_size(mem.get(), H5T_VARIABLE) < 0) {
      return failure(at, "cannot build a string type", true);
    }
    std::vector<char*> ptrs(count, nullptr);
    if (count > 0 && H5Aread(attr.get(), mem.get(), ptrs.data()) < 0) {
      return failure(at, "cannot be read", true);
    }
    for (const char* p : ptrs) out.emplace_back(p == nullptr ? "" : p);
    if (count > 0) reclaim_strings(mem.get(), space.get(), ptrs.data());
    return out;
  }

  // Fixed length: `size` bytes per element, read as null-padded so that space-padded
  // strings come back trimmed and a string filling its whole width needs no terminator.
  const std::size_t size = H5Tget_size(type.get());
  if (size == 0) return failure(at, "has a zero-length string type", false);
  if (count != 0 && size > std::numeric_limits<std::size_t>::max() / count) {
    return failure(at, "is too large", false);
  }
  if (H5Tset_size(mem.get(), size) < 0 || H5Tset_strpad(mem.get(), H5T_STR_NULLPAD) < 0) {
    return failure(at, "cannot build a string type", true);
  }
  std::vector<char> buffer(count * size, '\0');
  if (count > 0 && H5Aread(attr.get(), mem.get(), buffer.data()) < 0) {
    return failure(at, "cannot be read", true);
  }
  for (std::size_t i = 0; i < count; ++i) {
    const char* s = buffer.data() + i * size;
    out.emplace_back(s, strnlen(s, size));
  }
  return out;
}

Result<std::string> Group::string_attribute(std::string_view name) const {
  Result<std::vector<std::string>> list = string_list_attribute(name);
  if (!list.ok()) return list.status();
  if (list->size() != 1) {
    return failure(where() + " attribute " + std::string(name),
                   "expected one string, found " + std::to_string(list->size()), false);
  }
  return std::move(list->front());
}

bool Group::exists(std::string_view relative) const {
  // H5Lexists checks only the last component and fails when an intermediate one is
  // missing, so walk the path one link at a time.
  std::string prefix;
  for (std::string_view part : split_path(relative)) {
    if (!prefix.empty()) prefix += '/';
    prefix += part;
    const htri_t r = H5Lexists(handle_.get(), prefix.c_str(), H5P_DEFAULT);
    if (r <= 0) {
      if (r < 0) H5Eclear2(H5E_DEFAULT);
      return false;
    }
  }
  return !prefix.empty();
}

Result<Group> Group::group(std::string_view relative) const {
  const std::string path = child_path(relative);
  if (!exists(relative)) return failure(*file_ + ": " + path, "no such group", false);
  const std::string rel(relative);
  Handle obj(H5Oopen(handle_.get(), rel.c_str(), H5P_DEFAULT), H5Oclose);
  if (!obj.valid()) return failure(*file_ + ": " + path, "cannot be opened", true);
  if (H5Iget_type(obj.get()) != H5I_GROUP) {
    return failure(*file_ + ": " + path, "is not a group", false);
  }
  return Group(std::move(obj), path, file_);
}

Result<std::vector<std::string>> Group::children() const {
  H5G_info_t info{};
  if (H5Gget_info(handle_.get(), &info) < 0) return failure(where(), "cannot list links", true);
  std::vector<std::string> names;
  names.reserve(info.nlinks);
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(handle_.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i,
                                           nullptr, 0, H5P_DEFAULT);
    if (len < 0) return failure(where(), "cannot list links", true);
    std::string name(static_cast<std::size_t>(len) + 1, '\0');
    if (H5Lget_name_by_idx(handle_.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(),
                           name.size(), H5P_DEFAULT) < 0) {
      return failure(where(), "cannot list links", true);
    }
    name.resize(static_cast<std::size_t>(len));
    names.push_back(std::move(name));
  }
  return names;
}

Result<Tensor> Group::read_float_dataset(std::string_view relative,
                                         std::size_t max_elements) const {
  const std::string at = *file_ + ": " + child_path(relative);
  if (!exists(relative)) return failure(at, "no such dataset", false);
  const std::string rel(relative);
  const Handle ds(H5Oopen(handle_.get(), rel.c_str(), H5P_DEFAULT), H5Oclose);
  if (!ds.valid()) return failure(at, "cannot be opened", true);
  if (H5Iget_type(ds.get()) != H5I_DATASET) return failure(at, "is not a dataset", false);

  const Handle type(H5Dget_type(ds.get()), H5Tclose);
  const Handle space(H5Dget_space(ds.get()), H5Sclose);
  if (!type.valid() || !space.valid()) return failure(at, "cannot be inspected", true);
  const H5T_class_t cls = H5Tget_class(type.get());
  const std::size_t bytes = H5Tget_size(type.get());
  if (cls != H5T_FLOAT || (bytes != 4 && bytes != 8)) {
    return failure(at,
                   "is stored as " + std::string(class_name(cls)) + " of " + std::to_string(bytes) +
                       " bytes; only float32 and float64 are supported",
                   false);
  }

  const int ndims = H5Sget_simple_extent_ndims(space.get());
  if (ndims < 0) return failure(at, "has an unreadable shape", true);
  std::vector<hsize_t> dims(static_cast<std::size_t>(ndims));
  if (ndims > 0 && H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0) {
    return failure(at, "has an unreadable shape", true);
  }
  Tensor t;
  t.stored_bits = static_cast<unsigned>(bytes * 8);
  std::size_t count = H5Sget_simple_extent_type(space.get()) == H5S_NULL ? 0 : 1;
  for (hsize_t d : dims) {
    if (d != 0 && count > max_elements / d) {
      return failure(at, "has more than " + std::to_string(max_elements) + " values", false);
    }
    count *= static_cast<std::size_t>(d);
    t.shape.push_back(static_cast<std::size_t>(d));
  }
  if (count > max_elements) {
    return failure(at, "has more than " + std::to_string(max_elements) + " values", false);
  }
  t.values.resize(count);
  if (count > 0 &&
      H5Dread(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.values.data()) < 0) {
    return failure(at, "cannot be read", true);
  }
  return t;
}

// ---- File ----

std::unique_lock<std::mutex> lock_library() { return std::unique_lock<std::mutex>(library_mutex()); }

Result<std::unique_ptr<File>> File::open_image(std::string_view image, std::string_view name) {
  std::unique_ptr<File> f(new File());
  f->name_ = std::make_shared<const std::string>(name);
  f->lock_ = std::unique_lock<std::mutex>(library_mutex());
  H5E_auto2_t printer = nullptr;
  if (H5Eget_auto2(H5E_DEFAULT, &printer, &f->saved_printer_data_) >= 0) {
    f->saved_printer_ = printer;
    f->silenced_ = H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0;
  }
  if (image.empty()) return failure(*f->name_, "empty file, not HDF5", false);
  H5Eclear2(H5E_DEFAULT);
  // The core (in-memory) driver over a copy of the image, opened read-only. This is what
  // H5LTopen_file_image does, written out so that HDF5's reason for refusing a file is
  // still on the error stack when we read it (the high-level call clears it on its way
  // out).
  const Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.valid() || H5Pset_fapl_core(fapl.get(), 64 * 1024, /*backing_store=*/0) < 0 ||
      H5Pset_file_image(fapl.get(), const_cast<char*>(image.data()), image.size()) < 0) {
    return failure(*f->name_, "cannot prepare an in-memory HDF5 image", true);
  }
  // The core driver takes two open files of the same name for one file, so each image
  // gets a name of its own (the lock is held: the counter needs no atomics).
  static std::uint64_t images_opened = 0;
  const std::string image_name = "estimator-hdf5-image-" + std::to_string(++images_opened);
  const hid_t id = H5Fopen(image_name.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (id < 0) return failure(*f->name_, "not a readable HDF5 file", true);
  f->file_ = Handle(id, H5Fclose);
  return f;
}

File::~File() {
  file_ = Handle();
  if (silenced_) H5Eset_auto2(H5E_DEFAULT, saved_printer_, saved_printer_data_);
}

Result<Group> File::root() const {
  Handle g(H5Gopen2(file_.get(), "/", H5P_DEFAULT), H5Gclose);
  if (!g.valid()) return failure(*name_, "cannot open the root group", true);
  return Group(std::move(g), "/", name_);
}

}  // namespace estimator::models::hdf5

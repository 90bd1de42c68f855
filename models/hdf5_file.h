// SPDX-License-Identifier: Apache-2.0
// Read-only access to an HDF5 file held in memory: the small part of the HDF5 C API that
// model loaders need (groups, string attributes, floating-point datasets), with RAII
// handles and errors as Status values that name the file and the HDF5 path.
//
// Files are opened from a memory image (the core driver over a copy of the bytes, read-only,
// as H5LTopen_file_image does), because models arrive inside zips, over HTTP or embedded
// in the binary; nothing touches the file system.
//
// Threads: one File and everything opened from it are used by one thread at a time. A
// File holds a process-wide lock from open to close, so HDF5 calls from different loaders
// never interleave even with a library built without thread safety, and it silences the
// library's automatic error printing on its thread while open (errors are reported through
// Status instead, with the innermost message of HDF5's error stack). A Group must not
// outlive the File it came from.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace estimator::models::hdf5 {

// An HDF5 identifier with its close function; move-only. -1 = none.
class Handle {
 public:
  using Closer = int (*)(std::int64_t);
  Handle() = default;
  Handle(std::int64_t id, Closer close) : id_(id), close_(close) {}
  Handle(Handle&& other) noexcept;
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle();

  std::int64_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  void reset();
  std::int64_t id_ = -1;
  Closer close_ = nullptr;
};

// A dataset read into doubles (float32 values are widened exactly), row-major.
struct Tensor {
  std::vector<std::size_t> shape;  // empty for a scalar
  std::vector<double> values;
  unsigned stored_bits = 0;  // 32 or 64: the precision in the file
};

// A group of an open file. Paths given to its methods are relative to it ("a/b:0").
class Group {
 public:
  // "<file>: <absolute HDF5 path>", the prefix of every message about this group.
  std::string where() const;
  const std::string& path() const { return path_; }

  bool has_attribute(std::string_view name) const;

  // A string attribute as a list: a scalar gives one element, a 1-D array its elements.
  // Variable- or fixed-length (null- or space-padded), ASCII or UTF-8. An attribute of
  // another class with no elements reads as an empty list: Keras writes the weight_names
  // of a layer without weights as an empty float64 array. kInvalidArgument otherwise.
  Result<std::vector<std::string>> string_list_attribute(std::string_view name) const;

  // A string attribute holding exactly one string.
  Result<std::string> string_attribute(std::string_view name) const;

  // True when every component of `relative` names an existing link.
  bool exists(std::string_view relative) const;

  // A subgroup; kInvalidArgument when it is missing or not a group.
  Result<Group> group(std::string_view relative) const;

  // Names of the links directly in this group, in the file's name order.
  Result<std::vector<std::string>> children() const;

  // A floating-point dataset (32 or 64 bits; anything else is refused, naming the class
  // and size). Refused when it has more than `max_elements` values, before reading.
  Result<Tensor> read_float_dataset(std::string_view relative, std::size_t max_elements) const;

 private:
  friend class File;
  Group(Handle h, std::string path, std::shared_ptr<const std::string> file)
      : handle_(std::move(h)), path_(std::move(path)), file_(std::move(file)) {}
  std::string child_path(std::string_view relative) const;

  Handle handle_;
  std::string path_;
  std::shared_ptr<const std::string> file_;
};

// The process-wide lock every File holds while open. A caller that forks a child to read
// HDF5 holds it across the fork, so that no other thread is inside the library then (the
// child would inherit its half-updated state and, perhaps, its internal locks held).
std::unique_lock<std::mutex> lock_library();

class File {
 public:
  // Opens `image` (a whole HDF5 file) read-only; `name` is used in messages.
  // kInvalidArgument with HDF5's reason when the bytes are not a readable HDF5 file.
  static Result<std::unique_ptr<File>> open_image(std::string_view image, std::string_view name);

  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  Result<Group> root() const;

 private:
  File() = default;

  using ErrorPrinter = int (*)(std::int64_t, void*);  // H5E_auto2_t

  std::unique_lock<std::mutex> lock_;
  ErrorPrinter saved_printer_ = nullptr;  // this thread's automatic printing before open
  void* saved_printer_data_ = nullptr;
  bool silenced_ = false;
  Handle file_;
  std::shared_ptr<const std::string> name_;
};

}  // namespace estimator::models::hdf5

// SPDX-License-Identifier: Apache-2.0
// The object model of the restricted pickle reader (models/pickle.h): the values a pickle
// builds when nothing is executed. A REDUCE or NEWOBJ of an allowed class becomes an
// Object that records the class name, its arguments and the state BUILD gave it; numpy's
// dtypes and arrays are the only values with a meaning of their own (models/pickle_numpy.h
// reads them). Every Value is owned by one pickle::Document; memo references may share
// a node and a hostile file may build a cycle, so consumers walk known paths only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace estimator::models::pickle {

class Value;

struct None {};
struct Str {
  std::string text;  // UTF-8
};
struct Bytes {
  std::string data;
};
// An integer wider than 64 bits (LONG1/LONG4), kept as little-endian two's complement.
// Seen in inert state only (numpy SeedSequence entropy); it has no numeric accessor.
struct BigInt {
  std::string le_bytes;
};
struct List {  // also sets and frozensets, read as lists
  std::vector<Value*> items;
};
struct Tuple {
  std::vector<Value*> items;
};
// Insertion order; a key set twice appears twice and find() returns the later entry,
// which is what Python's dict would hold.
struct Dict {
  std::vector<std::pair<Value*, Value*>> entries;
  const Value* find(std::string_view key) const;  // string keys only
};
// A resolved (allowed) module-level name: a class or a function.
struct Global {
  std::string module;
  std::string name;
  std::string qualified() const { return module + "." + name; }
};
// What REDUCE / NEWOBJ of a Global, then BUILD, produce: nothing is constructed.
struct Object {
  std::string module;
  std::string name;
  Value* args = nullptr;   // a Tuple
  Value* state = nullptr;  // BUILD's argument; nullptr when never built
  std::string qualified() const { return module + "." + name; }
  // state[key] when the state is a dict (or a (dict, slots) pair); nullptr otherwise.
  const Value* attr(std::string_view key) const;
};

struct DtypeField {
  std::string name;
  const Value* dtype;  // a Dtype value
  std::int64_t offset;
};
// numpy.dtype: built from its pickle ("f8", align, copy) then BUILD state
// (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata]).
struct Dtype {
  char kind = 0;         // numpy kind: b i u f c O V U S M m
  char byteorder = '|';  // '<' or '>' ('=' is stored as the host's), '|' = not applicable
  std::int64_t itemsize = 0;
  bool has_subarray = false;
  std::vector<DtypeField> fields;  // structured dtypes, in names order
  bool is_object() const { return kind == 'O'; }
  const DtypeField* field(std::string_view name) const;
};
// numpy.ndarray (from _reconstruct + BUILD, scalar, _frombuffer, or a joblib wrapper).
// A numpy scalar is a 0-d array. Data is always stored in C order.
struct Array {
  const Value* dtype = nullptr;  // a Dtype value; nullptr until built
  std::vector<std::int64_t> shape;
  std::string data;                   // count() * itemsize bytes, C order (non-object)
  std::vector<const Value*> objects;  // count() elements, C order (object dtype)
  bool built = false;
  std::int64_t count() const;  // product of shape (1 for 0-d)
  const Dtype& type() const;
};

enum class Kind : std::uint8_t {
  kNone,
  kBool,
  kInt,
  kBigInt,
  kFloat,
  kStr,
  kBytes,
  kList,
  kTuple,
  kDict,
  kGlobal,
  kObject,
  kDtype,
  kArray,
};
std::string_view kind_name(Kind k);

class Value {
 public:
  using Data = std::variant<None, bool, std::int64_t, BigInt, double, Str, Bytes, List, Tuple, Dict,
                            Global, Object, Dtype, Array>;
  Value(Data d, std::size_t offset) : data_(std::move(d)), offset_(offset) {}

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  std::size_t offset() const { return offset_; }  // where it was made in the file

  template <typename T>
  const T* as() const {
    return std::get_if<T>(&data_);
  }
  template <typename T>
  T* as_mutable() {
    return std::get_if<T>(&data_);
  }

  const Data& data() const { return data_; }

 private:
  Data data_;
  std::size_t offset_;
};

// Helpers that read a value the way Python code would use it. nullopt = wrong kind.
std::optional<std::int64_t> as_int(const Value& v);  // int, bool, integer 0-d array
std::optional<double> as_number(const Value& v);     // int, bool, float, numeric 0-d array
std::optional<bool> as_bool(const Value& v);         // bool, numpy bool_ scalar
std::optional<std::string_view> as_str(const Value& v);
std::span<Value* const> items(const Value& v);  // list or tuple; empty otherwise
// A one-line description for messages: "str 'zero'", "int 3", "ndarray f8 (5,)", ...
std::string describe(const Value& v);
// "f8", ">i4", "V64{8 fields}": a dtype as messages show it.
std::string dtype_text(const Dtype& d);

}  // namespace estimator::models::pickle

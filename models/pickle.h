// SPDX-License-Identifier: Apache-2.0
// A restricted reader of Python pickles as joblib writes them (KEPLER.md section 6).
//
// Kepler's model server publishes scikit-learn models as joblib files: a pickle of
// protocol 2 to 5 in which every numpy array is replaced by a joblib NumpyArrayWrapper
// whose raw bytes follow the wrapper in the stream. Unpickling in Python runs whatever
// callables the file names; this reader runs nothing. It interprets the opcodes as data:
//
//   * GLOBAL / STACK_GLOBAL resolve a name only when it is on the allow list (a few numpy,
//     joblib and standard-library names built in, plus the caller's classes); any other
//     name is refused with "class <module>.<name> is not allowed".
//   * REDUCE / NEWOBJ never call: they record an Object {module, name, args}; BUILD records
//     its state. Only the numpy constructors (_reconstruct, scalar, dtype, _frombuffer) and
//     _codecs.encode(s, "latin1") are interpreted, into Array, Dtype and Bytes values.
//   * The result is a graph of Values owned by one Document (memo references may share a
//     node, and a hostile file may even build a cycle: consumers walk known paths, never
//     the whole graph).
//
// joblib's array layout (joblib/numpy_pickle.py, NumpyArrayWrapper.write_array/read_array):
//
//   ... NumpyArrayWrapper NEWOBJ, state dict {subclass, shape, order, dtype, allow_mmap
//       [, numpy_array_alignment_bytes]} BUILD | [pad] [data] | next opcode ...
//
//   pad  = when the state has numpy_array_alignment_bytes = A (joblib >= 1.2; absent in
//          older files, None when the writer could not tell() its position): one byte
//          p (1..A) then p bytes 0xff, so that data starts at a multiple of A counted from
//          the start of the pickle.
//   data = prod(shape) * itemsize raw bytes in `order` (C or F), or, for an object dtype
//          (GradientBoosting's estimators_), a complete nested pickle of protocol 2 of the
//          whole ndarray (its own memo), ending with its own STOP.
//   With protocol 4 the writer closes the current FRAME before the padding, so frames
//   never straddle array bytes; the reader therefore treats FRAME as a length check only.
//
// Hostile input: every length is checked against the bytes left, memo indices against
// the memo, the value stack and MARK nesting are bounded, and the memory built is charged
// against a budget proportional to the file size (Limits). A truncated file is refused
// with the offset where bytes ran out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/status.h"

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

// Element access of numeric arrays (kinds b, i, u, f with itemsize 1/2/4/8, byte order
// honoured), converted to double or int64. array_doubles also reads an object array whose
// every element is a float or an int (Python's or a numpy scalar; not a bool), and refuses
// any other element naming its type. Messages name `what`.
Result<std::vector<double>> array_doubles(const Array& a, std::string_view what);
Result<std::vector<std::int64_t>> array_ints(const Array& a, std::string_view what);
// One field of a structured array, e.g. the "threshold" of sklearn's tree nodes.
Result<std::vector<double>> field_doubles(const Array& a, std::string_view field,
                                          std::string_view what);
Result<std::vector<std::int64_t>> field_ints(const Array& a, std::string_view field,
                                             std::string_view what);

// A name GLOBAL may resolve, besides the built-in ones (numpy's _reconstruct / scalar /
// dtype / ndarray / _frombuffer under numpy.core and numpy._core, joblib's
// NumpyArrayWrapper, _codecs.encode, copyreg._reconstructor, builtins.object/bytes).
struct ClassName {
  std::string_view module;
  std::string_view name;
};

struct Limits {
  std::size_t max_stack = 1u << 20;  // values on the VM stack
  std::size_t max_marks = 512;       // MARK nesting
  std::size_t max_memo = 1u << 20;   // memo entries
  std::size_t memory_factor = 64;    // budget = file size * factor + memory_floor
  std::size_t memory_floor = 8u << 20;
};

struct Options {
  std::span<const ClassName> allowed;  // the caller's classes (e.g. scikit-learn's)
  Limits limits;
};

// The parsed file: owns every Value; root() is what the pickle's STOP returned.
class Document {
 public:
  Document() = default;
  Document(const Document&) = delete;
  Document& operator=(const Document&) = delete;

  const Value& root() const { return *root_; }
  std::size_t values() const { return arena_.size(); }
  std::size_t memory() const { return memory_; }  // bytes charged against the budget

 private:
  friend class Reader;
  std::deque<Value> arena_;  // a deque: elements never move, so Value* stay valid
  Value* root_ = nullptr;
  std::size_t memory_ = 0;
};

// Reads a joblib file or a plain pickle (protocol 2..5, uncompressed). `file` names the
// source in messages. Errors: kInvalidArgument (malformed, truncated, refused class,
// unsupported opcode or compression), kTooLarge (a limit was exceeded).
Result<std::unique_ptr<Document>> read_pickle(std::string_view bytes, std::string_view file,
                                              const Options& options = {});

}  // namespace estimator::models::pickle

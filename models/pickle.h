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
//     name is refused with "class <module>.<name> is not allowed" (plus the caller's
//     Options::refusal_note).
//   * REDUCE / NEWOBJ never call: they record an Object {module, name, args}; BUILD records
//     its state. Only the numpy constructors (_reconstruct, scalar, dtype, _frombuffer) and
//     _codecs.encode(s, "latin1") and bytearray(bytes) are interpreted, into Array, Dtype
//     and Bytes values.
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
//
// Three files: pickle_machine.cpp runs the opcodes (this header's read_pickle),
// pickle_value.h is the object model it builds, pickle_numpy.h rebuilds numpy's dtypes and
// arrays and reads their elements. No exception leaves read_pickle.
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
#include "models/pickle_numpy.h"
#include "models/pickle_value.h"

namespace estimator::models::pickle {

// A name GLOBAL may resolve, besides the built-in ones (numpy's _reconstruct / scalar /
// dtype / ndarray / _frombuffer under numpy.core and numpy._core, joblib's
// NumpyArrayWrapper, _codecs.encode, copyreg._reconstructor, builtins.object/bytes/
// bytearray, collections.OrderedDict; a bytearray is read as Bytes, an OrderedDict as a Dict).
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
  // What the caller adds to "class <module>.<name> is not allowed" (e.g. that the class is
  // a classifier); nullptr adds nothing.
  std::string (*refusal_note)(std::string_view module, std::string_view name) = nullptr;
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

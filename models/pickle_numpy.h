// SPDX-License-Identifier: Apache-2.0
// numpy inside a pickle: how dtypes and ndarrays are rebuilt from the values numpy's and
// joblib's reducers pickle (models/pickle_machine.cpp calls the builders when it meets
// those names), and how their elements are read as numbers.
//
//   numpy.dtype("f8", align, copy) + BUILD (version, byteorder, subarray, names, fields,
//       elsize, alignment, flags[, metadata])            -> Dtype
//   numpy.core.multiarray._reconstruct(ndarray, (0,), b"b") + BUILD
//       ([version,] shape, dtype, is_fortran, data bytes or object list)  -> Array
//   numpy.core.multiarray.scalar(dtype, bytes)           -> 0-d Array
//   numpy.core.numeric._frombuffer(bytes, dtype, shape, order)  -> Array
//   joblib.numpy_pickle.NumpyArrayWrapper state {subclass, shape, order, dtype, allow_mmap
//       [, numpy_array_alignment_bytes]}                  -> the header of the raw array
//       bytes that follow it in the stream (the layout is drawn in models/pickle.h).
// numpy 2 names the same functions under numpy._core; both spellings are accepted.
//
// Every builder returns a Status naming what is wrong (shape, dtype, byte count); the
// machine prefixes the file offset. Sizes are bounded: at most 32 dimensions, a dimension
// and an element count below 2^40, an item below 1 MiB.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "models/pickle_value.h"

namespace estimator::models::pickle {

// ---- element access (kinds b, i, u, f with itemsize 1/2/4/8, byte order honoured)

// Element access of numeric arrays, converted to double or int64. array_doubles also
// reads an object array whose every element is a float or an int (Python's or a numpy
// scalar; not a bool), and refuses any other element naming its type. Messages name `what`.
Result<std::vector<double>> array_doubles(const Array& a, std::string_view what);
Result<std::vector<std::int64_t>> array_ints(const Array& a, std::string_view what);
// One field of a structured array, e.g. the "threshold" of sklearn's tree nodes.
Result<std::vector<double>> field_doubles(const Array& a, std::string_view field,
                                          std::string_view what);
Result<std::vector<std::int64_t>> field_ints(const Array& a, std::string_view field,
                                             std::string_view what);

// A built 0-d array of a numeric dtype (a numpy scalar), or nullptr.
const Array* numeric_scalar(const Value& v);
double scalar_double(const Array& scalar);
std::optional<std::int64_t> scalar_int(const Array& scalar);  // nullopt for floats

// ---- builders

// numpy.dtype(typestr, ...): kind and item size; BUILD adds byte order and fields.
Result<Dtype> dtype_from_args(const Tuple& args);
// BUILD of a dtype. Fields must fit inside the item.
Status set_dtype_state(Dtype& d, const Value& state);
// `v` as a dtype with a size (object dtypes count as 8 bytes). `what` names it.
Result<const Dtype*> dtype_of(const Value& v, std::string_view what);
// A shape tuple: at most 32 dimensions, each in 0..2^40.
Result<std::vector<std::int64_t>> shape_of(const Value& v);
// prod(shape) * itemsize; kTooLarge when it overflows the bounds.
Result<std::size_t> data_size(const std::vector<std::int64_t>& shape, const Dtype& dt);
// Stores raw element bytes, converting Fortran order to C order.
void set_array_data(Array& a, std::string_view raw, bool fortran);
// BUILD of an ndarray made by _reconstruct.
Status set_array_state(Array& a, const Value& state);
// numpy scalar(dtype, bytes) and _frombuffer(bytes, dtype, shape, order).
Result<Array> scalar_from_args(std::span<Value* const> args);
Result<Array> array_from_buffer(std::span<Value* const> args);

// What a NumpyArrayWrapper's state says about the bytes that follow it: the array's shape
// and dtype (not yet built), its order, and the alignment padding joblib >= 1.2 writes
// before the data (nullopt: no padding byte at all).
struct WrappedArray {
  Array array;
  bool fortran = false;
  std::optional<int> alignment;
};
// `is_ndarray` tells whether a Global is numpy.ndarray (the machine owns the name table).
Result<WrappedArray> wrapper_header(const Value& state, bool (*is_ndarray)(const Global&));

}  // namespace estimator::models::pickle

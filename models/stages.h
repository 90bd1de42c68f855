// SPDX-License-Identifier: Apache-2.0
// The stages of a per-component pipeline, as Kepler's model server builds them:
//   request columns -> feature-engineering transforms (fe_files: scaler.pkl, then
//   poly_scaler.pkl, ...) -> one regressor (package.pkl, package.json, model.h5, ...).
//
// Each format's loader produces a Transform or a Regressor; models/pipeline_model.h
// assembles them into a Model. Stages evaluate a block of rows at once in double
// precision (the references, scikit-learn and numpy, compute in float64; XGBoost compares
// in float32 and says so in its own stage). Stages are immutable and thread-safe; any
// intermediate memory comes from the caller's Scratch, which only grows, so that steady
// traffic evaluates without allocating.
#pragma once

#include <Eigen/Core>
#include <memory>
#include <string>
#include <vector>

namespace estimator::models {

using RowMatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstRowsD = Eigen::Ref<const RowMatrixD>;
using RowsD = Eigen::Ref<RowMatrixD>;

// Intermediate buffers of one evaluation. Owned by the caller (one per thread); a buffer
// is resized only when a request needs more than any earlier one. Slots below
// kRegressorSlots belong to the pipeline; a Regressor uses slots from kRegressorSlots up.
inline constexpr std::size_t kRegressorSlots = 4;
class Scratch {
 public:
  // A rows x cols matrix; slot k is distinct from every other slot k' while in use.
  RowsD matrix(std::size_t slot, Eigen::Index rows, Eigen::Index cols) {
    if (buffers_.size() <= slot) buffers_.resize(slot + 1);
    std::vector<double>& b = buffers_[slot];
    const auto need = static_cast<std::size_t>(rows * cols);
    if (b.size() < need) b.resize(need);
    return Eigen::Map<RowMatrixD>(b.data(), rows, cols);
  }

  // The Scratch of a stage evaluated inside another one (the regressor ending a
  // scikit-learn Pipeline), so that the inner stage's slots never meet the outer one's.
  Scratch& nested() {
    if (!nested_) nested_ = std::make_unique<Scratch>();
    return *nested_;
  }

 private:
  std::vector<std::vector<double>> buffers_;
  std::unique_ptr<Scratch> nested_;
};

// Feature engineering: in (rows x inputs()) -> out (rows x outputs()).
class Transform {
 public:
  virtual ~Transform() = default;
  virtual Eigen::Index inputs() const = 0;
  virtual Eigen::Index outputs() const = 0;
  virtual void apply(const ConstRowsD& in, RowsD out) const = 0;
  virtual std::string describe() const = 0;  // e.g. "MaxAbsScaler(5)", for listings
};

// A regressor: in (rows x inputs()) -> out (rows x outputs()). Most have one output (one
// component); a Keras model may have several.
class Regressor {
 public:
  virtual ~Regressor() = default;
  virtual Eigen::Index inputs() const = 0;
  virtual Eigen::Index outputs() const { return 1; }
  // inputs() is the exact width taken, except for a regressor that reads one column by
  // index and stores no feature count (Kepler's curve fits): it takes any wider input too.
  virtual bool takes_wider_input() const { return false; }
  virtual void predict(const ConstRowsD& in, RowsD out, Scratch& scratch) const = 0;
  virtual std::string describe() const = 0;  // e.g. "XGBoost(100 trees)"
};

inline bool takes_width(const Regressor& r, Eigen::Index width) {
  return r.inputs() == width || (r.takes_wider_input() && r.inputs() < width);
}

}  // namespace estimator::models

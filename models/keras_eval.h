// SPDX-License-Identifier: Apache-2.0
// The evaluation of a loaded Keras model: a graph of operations with their weights, in an
// order where each reads only earlier ones, checked once (plan) and then evaluated as a
// Regressor (models/stages.h); and the byte form in which the isolated loader
// (models/keras_model.cpp) hands a loaded model back to the daemon.
#pragma once

#include <Eigen/Core>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "models/keras_config.h"
#include "models/stages.h"

namespace estimator::models::keras {

enum class Op : std::uint8_t {
  kInput,        // the caller's input rows; node 0 and only node 0
  kDense,        // x K (+ bias), then the activation
  kActivation,   // the activation alone
  kAffine,       // x * scale + bias, per column (BatchNormalization at inference)
  kConcatenate,  // the inputs side by side, in order
  kAdd,          // the sum of the inputs
};
inline constexpr std::uint8_t kLastOp = static_cast<std::uint8_t>(Op::kAdd);

struct Node {
  Op op = Op::kInput;
  std::vector<std::size_t> inputs;  // earlier nodes
  Eigen::Index width = 0;           // columns of this node's output
  ActivationFn activation;
  RowMatrixD kernel;                // kDense: in x out, as Keras stores it: y = x K + b
  Eigen::RowVectorXd scale;         // kAffine
  Eigen::RowVectorXd bias;          // kDense (empty when the layer has none), kAffine
};

class KerasGraph final : public Regressor {
 public:
  // Checks that `nodes` form a graph this class evaluates: node 0 the input, each node
  // reading earlier nodes with the widths its operation needs, every weight finite-sized
  // to match, outputs existing nodes. `outputs`' widths, side by side, are outputs().
  static Result<std::unique_ptr<KerasGraph>> plan(std::vector<Node> nodes,
                                                 std::vector<std::size_t> outputs,
                                                 std::string description);

  Eigen::Index inputs() const override { return nodes_.front().width; }
  Eigen::Index outputs() const override { return outputs_width_; }
  std::string describe() const override { return description_; }
  // Each node but the input writes its own scratch slot; the outputs are then copied
  // side by side into `out`. Never allocates once the scratch has grown.
  void predict(const ConstRowsD& in, RowsD out, Scratch& scratch) const override;

  // The planned model as bytes, for the trip from the isolated loader (a child process)
  // back to the daemon: native-endian, same binary on both ends.
  std::string serialize() const;
  // The inverse of serialize(); checks every length against the bytes it has, then plans.
  static Result<std::unique_ptr<Regressor>> deserialize(std::string_view bytes,
                                                        std::string_view file);

 private:
  KerasGraph(std::vector<Node> nodes, std::vector<std::size_t> outputs, std::string description,
             Eigen::Index outputs_width)
      : nodes_(std::move(nodes)),
        outputs_(std::move(outputs)),
        description_(std::move(description)),
        outputs_width_(outputs_width) {}

  std::vector<Node> nodes_;
  std::vector<std::size_t> outputs_;
  std::string description_;
  Eigen::Index outputs_width_;
};

}  // namespace estimator::models::keras

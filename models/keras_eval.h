// The evaluation of a loaded Keras model: its steps (Dense layers and activations, in
// order) as a Regressor (models/stages.h), and the byte form in which the isolated loader
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

struct Step {
  bool dense = false;
  RowMatrixD kernel;        // in x out, as Keras stores it: y = x K + b
  Eigen::RowVectorXd bias;  // empty when the layer has no bias
  Activation activation = Activation::kLinear;
};

class KerasRegressor final : public Regressor {
 public:
  KerasRegressor(std::vector<Step> steps, Eigen::Index inputs, std::string description);

  Eigen::Index inputs() const override { return inputs_; }
  Eigen::Index outputs() const override { return outputs_; }
  std::string describe() const override { return description_; }
  void predict(const ConstRowsD& in, RowsD out, Scratch& scratch) const override;

  // The loaded model as bytes, for the trip from the isolated loader (a child process)
  // back to the daemon: native-endian, same binary on both ends.
  std::string serialize() const;
  // The inverse of serialize(); checks every length against the bytes it has.
  static Result<std::unique_ptr<Regressor>> deserialize(std::string_view bytes,
                                                        std::string_view file);

 private:
  std::vector<Step> steps_;
  std::size_t last_dense_ = 0;
  Eigen::Index inputs_;
  Eigen::Index outputs_ = 0;
  std::string description_;
};

}  // namespace estimator::models::keras

// SPDX-License-Identifier: Apache-2.0
// The chart `estimator validate --plot` writes: for each measured component a panel of
// power over time (one point per CSV row), the measurement in black and the best-ranked
// models' predictions in colour. The raster carries no text (no font is bundled): the
// legend, the panels' order and each panel's watt range are in the PNG's tEXt chunks,
// which image viewers and `identify -verbose` show.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "service/cli/png_image.h"

namespace estimator::service {

struct PlotSeries {
  std::string label;           // the model's name
  std::vector<double> values;  // one per row; empty: the model lacks the component
};

struct PlotPanel {
  std::string component;
  std::vector<double> measured;        // one per row
  // The same models, in the same order, in every panel (so each keeps its colour); at
  // most kPlotColours.size() are drawn.
  std::vector<PlotSeries> predicted;
};

// Colours of the predicted series, in rank order.
inline constexpr Rgb kPlotColours[] = {{214, 39, 40}, {31, 119, 180}, {44, 160, 44}};
inline constexpr Rgb kMeasuredColour = {0, 0, 0};

// The PNG file; kInvalidArgument when there is no panel or a series' length differs from
// its panel's measurement.
Result<std::string> plot_png(const std::vector<PlotPanel>& panels);

}  // namespace estimator::service

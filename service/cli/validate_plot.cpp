// SPDX-License-Identifier: Apache-2.0
#include "service/cli/validate_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace estimator::service {
namespace {

constexpr int kWidth = 960;
constexpr int kPanelHeight = 240;
constexpr int kMargin = 24;  // around each panel's plotting area
constexpr Rgb kBackground = {255, 255, 255};
constexpr Rgb kFrame = {120, 120, 120};
constexpr Rgb kGrid = {225, 225, 225};

std::string watts(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace

Result<std::string> plot_png(const std::vector<PlotPanel>& panels) {
  if (panels.empty()) return Status(Code::kInvalidArgument, "nothing to plot");
  for (const PlotPanel& p : panels) {
    for (const PlotSeries& s : p.predicted) {
      if (!s.values.empty() && s.values.size() != p.measured.size()) {
        return Status(Code::kInvalidArgument, "series " + s.label + " of panel " + p.component +
                                                  " has " + std::to_string(s.values.size()) +
                                                  " points, the measurement " +
                                                  std::to_string(p.measured.size()));
      }
    }
  }
  const int n_panels = static_cast<int>(panels.size());
  RgbImage img(kWidth, kPanelHeight * n_panels, kBackground);
  const std::size_t n_series = std::size(kPlotColours);
  std::string ranges;
  for (int k = 0; k < n_panels; ++k) {
    const PlotPanel& p = panels[static_cast<std::size_t>(k)];
    const std::size_t drawn = std::min(p.predicted.size(), n_series);
    double lo = INFINITY, hi = -INFINITY;
    auto widen = [&](const std::vector<double>& v) {
      for (double x : v) {
        if (std::isfinite(x)) {
          lo = std::min(lo, x);
          hi = std::max(hi, x);
        }
      }
    };
    widen(p.measured);
    for (std::size_t s = 0; s < drawn; ++s) widen(p.predicted[s].values);
    if (!std::isfinite(lo)) lo = hi = 0;
    if (hi - lo < 1e-9) {  // a flat line sits mid-panel rather than on the frame
      lo -= 1;
      hi += 1;
    }
    const int left = kMargin, right = kWidth - kMargin;
    const int top = k * kPanelHeight + kMargin, bottom = (k + 1) * kPanelHeight - kMargin;
    for (int g = 1; g < 4; ++g) {
      const int y = top + (bottom - top) * g / 4;
      img.line(left, y, right, y, kGrid);
    }
    img.line(left, top, right, top, kFrame);
    img.line(left, bottom, right, bottom, kFrame);
    img.line(left, top, left, bottom, kFrame);
    img.line(right, top, right, bottom, kFrame);
    const std::size_t n = p.measured.size();
    auto px = [&](std::size_t i) {
      return n < 2 ? (left + right) / 2
                   : left + static_cast<int>(std::lround(static_cast<double>(i) *
                                                         (right - left) / static_cast<double>(n - 1)));
    };
    auto py = [&](double v) {
      return bottom - static_cast<int>(std::lround((v - lo) / (hi - lo) * (bottom - top)));
    };
    auto draw = [&](const std::vector<double>& v, Rgb c) {
      if (v.empty()) return;
      for (std::size_t i = 0; i + 1 < n; ++i) img.line(px(i), py(v[i]), px(i + 1), py(v[i + 1]), c);
      if (n == 1) img.fill(px(0) - 1, py(v[0]) - 1, 3, 3, c);
    };
    // Predictions first: the measurement, drawn last, stays visible where they overlap.
    for (std::size_t s = drawn; s-- > 0;) draw(p.predicted[s].values, kPlotColours[s]);
    draw(p.measured, kMeasuredColour);
    // Colour keys in the top-right corner, in rank order: the legend's order in the text.
    for (std::size_t s = 0; s < drawn; ++s) {
      if (p.predicted[s].values.empty()) continue;
      img.fill(right - 12 * static_cast<int>(drawn - s), top + 4, 8, 8, kPlotColours[s]);
    }
    if (!ranges.empty()) ranges += "; ";
    ranges += p.component + " " + watts(lo) + " W (bottom) to " + watts(hi) + " W (top)";
  }
  std::string legend = "black: measured";
  static constexpr const char* kNames[] = {"red", "blue", "green"};
  for (std::size_t s = 0; s < std::min(panels.front().predicted.size(), n_series); ++s) {
    legend += std::string("; ") + kNames[s] + ": " + panels.front().predicted[s].label;
  }
  std::string order;
  for (const PlotPanel& p : panels) order += (order.empty() ? "" : ", ") + p.component;
  return encode_png(img, {{"Title", "estimator validate: predicted vs measured power"},
                          {"Description", "panels top to bottom: " + order +
                                              "; x: CSV row (interval), y: watts; " + legend},
                          {"Comment", ranges}});
}

}  // namespace estimator::service

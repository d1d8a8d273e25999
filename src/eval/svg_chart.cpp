#include "eval/svg_chart.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace p2dpo::eval {
namespace {

constexpr int kLeft = 64;     // room for y tick labels and the y axis title
constexpr int kRight = 16;
constexpr int kTop = 34;      // the chart title
constexpr int kBottom = 46;   // x tick labels and the x axis title
constexpr int kLegendRow = 18;
constexpr double kCharWidth = 6.6;  // rough width of a 12 px character, for wrapping the legend

struct Range {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
  double step = 1;
};

Range axis_range(double lo, double hi, bool include_zero, bool integer_only) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (include_zero) lo = std::min(lo, 0.0), hi = std::max(hi, 0.0);
  if (hi - lo < 1e-12) {  // one value: a band around it
    const double pad = std::max(std::abs(lo) * 0.1, integer_only ? 1.0 : 1e-3);
    lo -= pad;
    hi += pad;
    if (include_zero && lo < 0 && lo + pad >= 0) lo = 0;
  }
  Range r;
  r.ticks = nice_ticks(lo, hi);
  if (integer_only) {
    // Steps of at least 1: fractional step ticks on a step axis read as a bug.
    double step = r.ticks.size() > 1 ? r.ticks[1] - r.ticks[0] : 1;
    if (step < 1) {
      r.ticks.clear();
      for (double t = std::floor(lo); t <= std::ceil(hi) + 1e-9; t += 1) r.ticks.push_back(t);
    }
  }
  r.lo = r.ticks.front();
  r.hi = r.ticks.back();
  r.step = r.ticks.size() > 1 ? r.ticks[1] - r.ticks[0] : 1;
  return r;
}

std::string num(double v) { return fmt::format("{:.1f}", v); }

std::string svg_open(const std::string& id, int width, int height, const std::string& title,
                     const std::string& desc) {
  const std::string base = id.empty() ? std::string("chart") : id;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"{0}\" viewBox=\"0 0 {1} {2}\" width=\"{1}\" "
      "height=\"{2}\" role=\"img\" aria-labelledby=\"{0}-title {0}-desc\">\n",
      html_escape(base), width, height);
  s += fmt::format("<title id=\"{}-title\">{}</title>\n", html_escape(base), html_escape(title));
  s += fmt::format("<desc id=\"{}-desc\">{}</desc>\n", html_escape(base), html_escape(desc));
  s += fmt::format("<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>\n", width, height);
  s += fmt::format("<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"600\" "
                   "fill=\"#222\">{}</text>\n",
                   width / 2, html_escape(title));
  return s;
}

// Legend rows below the plot: returns the markup; `rows` gets the number of rows used.
std::string legend(const std::vector<std::string>& names, int width, int y0, int& rows) {
  std::string s = "<g class=\"legend\">\n";
  double x = kLeft;
  int row = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const double w = 22 + kCharWidth * static_cast<double>(names[i].size()) + 14;
    if (x + w > width - kRight && x > kLeft) {
      ++row;
      x = kLeft;
    }
    const double y = y0 + row * kLegendRow;
    s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"4\" fill=\"{}\"/>", num(x), num(y - 4),
                     series_colour(i));
    s += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#222\">{}</text>\n", num(x + 20),
                     num(y + 1), html_escape(names[i]));
    x += w;
  }
  rows = names.empty() ? 0 : row + 1;
  s += "</g>\n";
  return s;
}

int legend_rows(const std::vector<std::string>& names, int width) {
  int rows = 0;
  legend(names, width, 0, rows);
  return rows;
}

std::string y_axis(const Range& yr, int plot_left, int plot_right, int plot_top, int plot_bottom,
                   const std::string& y_label) {
  std::string s = "<g class=\"axis y\">\n";
  const double span = yr.hi - yr.lo;
  for (double t : yr.ticks) {
    const double y = plot_bottom - (t - yr.lo) / span * (plot_bottom - plot_top);
    s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#e3e3e3\"/>", plot_left, num(y),
                     plot_right, num(y));
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\" fill=\"#444\">{}</text>\n",
                     plot_left - 6, num(y + 4), format_tick(t, yr.step));
  }
  s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#555\"/>\n", plot_left, plot_top,
                   plot_bottom);
  const int cy = (plot_top + plot_bottom) / 2;
  s += fmt::format("<text x=\"14\" y=\"{0}\" transform=\"rotate(-90 14 {0})\" text-anchor=\"middle\" "
                   "font-size=\"12\" fill=\"#222\">{1}</text>\n",
                   cy, html_escape(y_label));
  s += "</g>\n";
  return s;
}

}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

const char* series_colour(size_t i) {
  // Okabe-Ito, without its yellow (too light on white), then a few darker extras.
  static const char* const kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                         "#56B4E9", "#000000", "#8C564B", "#7F7F7F", "#17BECF"};
  return kPalette[i % (sizeof(kPalette) / sizeof(kPalette[0]))];
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const double start = std::floor(lo / step + 1e-9) * step;
  const double end = std::ceil(hi / step - 1e-9) * step;
  std::vector<double> ticks;
  for (int i = 0;; ++i) {
    double t = start + i * step;
    if (std::abs(t) < step * 1e-9) t = 0;  // no "-0"
    ticks.push_back(t);
    if (t >= end - step * 1e-9 || i > 1000) break;
  }
  return ticks;
}

std::string format_tick(double value, double step) {
  int decimals = 0;
  if (step > 0 && step < 1) decimals = static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  decimals = std::clamp(decimals, 0, 8);
  std::string s = fmt::format("{:.{}f}", value, decimals);
  if (s.rfind("-", 0) == 0 && s.find_first_not_of("-0.") == std::string::npos) s.erase(0, 1);
  return s;
}

std::string render_line_chart(const LineChart& chart) {
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  std::vector<std::string> names;
  for (const auto& s : chart.series) {
    names.push_back(s.name);
    for (size_t i = 0; i < s.y.size() && i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      xlo = std::min(xlo, s.x[i]), xhi = std::max(xhi, s.x[i]);
      ylo = std::min(ylo, s.y[i]), yhi = std::max(yhi, s.y[i]);
    }
  }
  const Range xr = axis_range(xlo, xhi, false, chart.integer_x);
  const Range yr = axis_range(ylo, yhi, chart.y_includes_zero, false);
  const int rows = legend_rows(names, chart.width);
  const int height = chart.height + rows * kLegendRow;
  const int pl = kLeft, pr = chart.width - kRight, pt = kTop, pb = chart.height - kBottom;
  auto px = [&](double x) { return pl + (x - xr.lo) / (xr.hi - xr.lo) * (pr - pl); };
  auto py = [&](double y) { return pb - (y - yr.lo) / (yr.hi - yr.lo) * (pb - pt); };

  std::string desc = fmt::format("Line chart: {} against {}; {} series", chart.y_label, chart.x_label,
                                 chart.series.size());
  for (const auto& s : chart.series) desc += "; " + s.name;
  std::string svg = svg_open(chart.id, chart.width, height, chart.title, desc);
  svg += y_axis(yr, pl, pr, pt, pb, chart.y_label);
  svg += "<g class=\"axis x\">\n";
  for (double t : xr.ticks) {
    const double x = px(t);
    svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#555\"/>", num(x), pb, pb + 4);
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#444\">{}</text>\n",
                       num(x), pb + 16, format_tick(t, xr.step));
  }
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#555\"/>\n", pl, pb, pr);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\" fill=\"#222\">{}</text>\n",
                     (pl + pr) / 2, pb + 34, html_escape(chart.x_label));
  svg += "</g>\n";
  for (size_t si = 0; si < chart.series.size(); ++si) {
    const auto& s = chart.series[si];
    std::string points, markers;
    size_t finite = 0;
    for (size_t i = 0; i < s.y.size() && i < s.x.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) ++finite;
    for (size_t i = 0; i < s.y.size() && i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      if (!points.empty()) points += ' ';
      points += num(px(s.x[i])) + "," + num(py(s.y[i]));
      if (finite <= chart.max_markers) {
        markers += fmt::format("<circle class=\"pt\" cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\"><title>{}: {} = {:.6g}, "
                               "{} = {:.6g}</title></circle>\n",
                               num(px(s.x[i])), num(py(s.y[i])), series_colour(si), html_escape(s.name),
                               html_escape(chart.x_label), s.x[i], html_escape(chart.y_label), s.y[i]);
      }
    }
    svg += fmt::format("<g class=\"series\"><title>{}</title>\n", html_escape(s.name));
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n",
                       series_colour(si), points);
    svg += markers;
    svg += "</g>\n";
  }
  int used = 0;
  svg += legend(names, chart.width, chart.height - 2, used);
  svg += "</svg>\n";
  return svg;
}

std::string render_bar_chart(const BarChart& chart) {
  double ylo = std::numeric_limits<double>::infinity(), yhi = -ylo;
  std::vector<std::string> names;
  for (const auto& s : chart.series) {
    names.push_back(s.name);
    for (double v : s.y)
      if (std::isfinite(v)) ylo = std::min(ylo, v), yhi = std::max(yhi, v);
  }
  const Range yr = axis_range(ylo, yhi, true, false);
  const int rows = legend_rows(names, chart.width);
  const int height = chart.height + rows * kLegendRow;
  const int pl = kLeft, pr = chart.width - kRight, pt = kTop, pb = chart.height - kBottom;
  auto py = [&](double y) { return pb - (y - yr.lo) / (yr.hi - yr.lo) * (pb - pt); };
  std::string desc = fmt::format("Bar chart: {} for {} groups ({}) and {} series", chart.y_label,
                                 chart.categories.size(), fmt::join(chart.categories, ", "), chart.series.size());
  std::string svg = svg_open(chart.id, chart.width, height, chart.title, desc);
  svg += y_axis(yr, pl, pr, pt, pb, chart.y_label);
  const size_t groups = std::max<size_t>(chart.categories.size(), 1);
  const double group_w = static_cast<double>(pr - pl) / static_cast<double>(groups);
  const double bar_w = group_w * 0.8 / static_cast<double>(std::max<size_t>(chart.series.size(), 1));
  svg += "<g class=\"axis x\">\n";
  for (size_t g = 0; g < chart.categories.size(); ++g) {
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#444\">{}</text>\n",
                       num(pl + group_w * (static_cast<double>(g) + 0.5)), pb + 16, html_escape(chart.categories[g]));
  }
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#555\"/>\n", pl, num(py(0)), pr);
  svg += "</g>\n";
  for (size_t si = 0; si < chart.series.size(); ++si) {
    const auto& s = chart.series[si];
    svg += fmt::format("<g class=\"series\"><title>{}</title>\n", html_escape(s.name));
    for (size_t g = 0; g < s.y.size() && g < chart.categories.size(); ++g) {
      if (!std::isfinite(s.y[g])) continue;
      const double x = pl + group_w * static_cast<double>(g) + group_w * 0.1 + bar_w * static_cast<double>(si);
      const double y0 = py(0), y1 = py(s.y[g]);
      svg += fmt::format("<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}, {}: "
                         "{:.6g}</title></rect>\n",
                         num(x), num(std::min(y0, y1)), num(std::max(bar_w - 1, 1.0)),
                         num(std::max(std::abs(y1 - y0), 0.5)), series_colour(si), html_escape(s.name),
                         html_escape(chart.categories[g]), s.y[g]);
    }
    svg += "</g>\n";
  }
  int used = 0;
  svg += legend(names, chart.width, chart.height - 2, used);
  svg += "</svg>\n";
  return svg;
}

}  // namespace p2dpo::eval

#pragma once
// Inline SVG charts for the HTML report: line charts (F1 vs sigma, training curves, per-layer
// attention) and grouped bar charts. Self-contained markup: no scripts, no external fonts or
// styles, an accessible <title>/<desc>, axes with "nice" ticks and a legend. Non-finite values are
// left out (a line skips them) so a NaN metric never produces broken SVG.
#include <string>
#include <vector>

namespace p2dpo::eval {

struct ChartSeries {
  std::string name;
  std::vector<double> x;  // line charts only (same length as y)
  std::vector<double> y;
};

struct LineChart {
  std::string id;  // unique in the page (the <title>/<desc> ids derive from it); "" = "chart"
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<ChartSeries> series;
  int width = 540;
  int height = 320;
  bool y_includes_zero = false;  // stretch the y range to 0 (counts, shares)
  bool integer_x = false;        // x ticks at integers only (steps, layers)
  size_t max_markers = 60;       // a series with more points is drawn as a line without point markers
};

struct BarChart {
  std::string id;
  std::string title;
  std::string y_label;
  std::vector<std::string> categories;  // groups along x
  std::vector<ChartSeries> series;      // one bar per series in each group; y[i] for categories[i]
  int width = 540;
  int height = 320;
};

// Escapes text for HTML/SVG content and attribute values (& < > " ').
std::string html_escape(const std::string& text);

// One <polyline> per series (its finite points, in x order as given) and one <circle> per finite
// point when the series has at most max_markers points.
std::string render_line_chart(const LineChart& chart);
// One <rect class="bar"> per finite value.
std::string render_bar_chart(const BarChart& chart);

// Tick positions covering [lo, hi] with about `target` steps of 1, 2 or 5 x 10^k.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);
// A tick label: the shortest of fixed notations that shows the step's precision.
std::string format_tick(double value, double step);

// The colour of series i (a colour-blind-safe palette, cycled).
const char* series_colour(size_t i);

}  // namespace p2dpo::eval

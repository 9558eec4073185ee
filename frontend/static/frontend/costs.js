// The costs and coding-agents pages' charts, drawn with the vendored Chart.js from each
// canvas's data-series ({days, series: [{name, values}]}) and data-unit ("$" unless
// set): no inline script, so the pages keep working under a Content-Security-Policy
// without 'unsafe-inline'. Canvases that htmx swaps in are drawn too.
(function () {
  "use strict";
  var palette = ["#4f7cff", "#f2994a", "#27ae60", "#9b51e0", "#eb5757", "#2d9cdb", "#f2c94c", "#6fcf97"];

  function draw(canvas) {
    var data = JSON.parse(canvas.getAttribute("data-series"));
    var unit = canvas.getAttribute("data-unit");
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: data.days.map(function (d) { return d.slice(5); }),
        datasets: data.series.map(function (s, i) {
          return { label: s.name, data: s.values, backgroundColor: palette[i % palette.length], stack: "cost" };
        }),
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: {
          x: { stacked: true },
          y: { stacked: true, ticks: { callback: function (v) { return unit ? v + " " + unit : "$" + v; } } },
        },
      },
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.Chart) return;
    document.querySelectorAll("canvas.cost-chart").forEach(draw);
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    if (!window.Chart) return;
    event.target.querySelectorAll("canvas.cost-chart").forEach(draw);
  });
})();

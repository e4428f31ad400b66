// Draws each chart of the page from the figure its element carries (data, not code).
(function () {
  "use strict";
  if (typeof Plotly === "undefined") {
    return; // the tables carry every figure; the charts are a view of them
  }
  var config = { displaylogo: false, responsive: true };
  document.querySelectorAll("[data-chart]").forEach(function (element) {
    var figure = JSON.parse(element.getAttribute("data-chart"));
    Plotly.newPlot(element, figure.data, figure.layout, config);
  });
})();

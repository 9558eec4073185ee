// Flightdeck UI behaviour that htmx does not cover: the span tree (select, fold,
// keyboard) and loading a span's detail beside it. Rows are plain server-rendered divs;
// a subtree is the run of rows after a row with a greater depth.
(function () {
  "use strict";

  function rows(tree) { return Array.from(tree.querySelectorAll(".span-row")); }
  function depth(row) { return Number(row.dataset.depth); }

  // Show or hide rows from the fold state of their ancestors (one pass, in order).
  function applyFolds(tree) {
    let hideDeeperThan = null;
    for (const row of rows(tree)) {
      const d = depth(row);
      if (hideDeeperThan !== null && d > hideDeeperThan) { row.hidden = true; continue; }
      hideDeeperThan = null;
      row.hidden = false;
      if (row.getAttribute("aria-expanded") === "false") hideDeeperThan = d;
    }
  }

  function visible(tree) { return rows(tree).filter((r) => !r.hidden); }

  // Bars, their labels and the axis ticks come with their offsets in data- attributes
  // (percent of the trace) and the rows with their depth; they are set here through the
  // CSSOM because the Content-Security-Policy allows no style attributes.
  const OFFSETS = ["left", "right", "width"];
  function place(root) {
    const placed = Array.from(root.querySelectorAll("[data-left], [data-right], [data-width]"));
    if (root.matches && root.matches("[data-left], [data-right], [data-width]")) placed.push(root);
    for (const el of placed) {
      for (const side of OFFSETS) if (el.dataset[side] !== undefined) el.style[side] = el.dataset[side] + "%";
    }
    for (const name of root.querySelectorAll(".span-row > .span-name")) {
      name.style.setProperty("--depth", name.parentElement.dataset.depth);
    }
  }

  let detailTimer = null;
  function openDetail(tree, row, now) {
    const url = tree.dataset.detailUrl + row.dataset.span;
    const params = new URLSearchParams(window.location.search);
    params.set("span", row.dataset.span);
    history.replaceState(null, "", "?" + params.toString());
    clearTimeout(detailTimer);
    const load = () => htmx.ajax("GET", url, { target: "#detail", swap: "innerHTML" });
    if (now) load(); else detailTimer = setTimeout(load, 120);  // arrow keys: settle first
  }

  function select(tree, row, { open = true, now = true } = {}) {
    if (!row) return;
    for (const r of tree.querySelectorAll('.span-row[aria-selected="true"]')) r.setAttribute("aria-selected", "false");
    row.setAttribute("aria-selected", "true");
    tree.dataset.selected = row.dataset.span;
    tree.setAttribute("aria-activedescendant", row.id);
    row.scrollIntoView({ block: "nearest" });
    if (open) openDetail(tree, row, now);
  }

  function setFold(tree, row, expanded) {
    if (!row.hasAttribute("aria-expanded")) return;
    row.setAttribute("aria-expanded", expanded ? "true" : "false");
    applyFolds(tree);
  }

  function parentOf(tree, row) {
    const all = rows(tree);
    const d = depth(row);
    for (let i = all.indexOf(row) - 1; i >= 0; i--) if (depth(all[i]) < d) return all[i];
    return null;
  }

  function current(tree) {
    return tree.dataset.selected ? document.getElementById("span-" + tree.dataset.selected) : null;
  }

  function onKey(event) {
    const tree = event.currentTarget;
    const list = visible(tree);
    const row = current(tree);
    const at = row ? list.indexOf(row) : -1;
    switch (event.key) {
      case "ArrowDown": select(tree, list[Math.min(at + 1, list.length - 1)], { now: false }); break;
      case "ArrowUp": select(tree, list[Math.max(at - 1, 0)], { now: false }); break;
      case "Home": select(tree, list[0], { now: false }); break;
      case "End": select(tree, list[list.length - 1], { now: false }); break;
      case "ArrowRight":
        if (!row) return;
        if (row.getAttribute("aria-expanded") === "false") setFold(tree, row, true);
        else if (row.hasAttribute("aria-expanded")) select(tree, list[at + 1], { now: false });
        break;
      case "ArrowLeft":
        if (!row) return;
        if (row.getAttribute("aria-expanded") === "true") setFold(tree, row, false);
        else select(tree, parentOf(tree, row), { now: false });
        break;
      case "Enter": case " ":
        if (row) openDetail(tree, row, true);
        break;
      default: return;
    }
    event.preventDefault();
  }

  function onClick(event) {
    const tree = event.currentTarget;
    const row = event.target.closest(".span-row");
    if (!row) return;
    if (event.target.closest(".toggle")) {
      setFold(tree, row, row.getAttribute("aria-expanded") === "false");
      return;
    }
    tree.focus({ preventScroll: true });
    select(tree, row);
  }

  function initTree(tree) {
    if (tree.dataset.ready) return;
    tree.dataset.ready = "1";
    tree.addEventListener("keydown", onKey);
    tree.addEventListener("click", onClick);
    const chosen = current(tree);
    if (chosen) {
      // Opened from a link to one span: unfold its ancestors and show it.
      for (let p = parentOf(tree, chosen); p; p = parentOf(tree, p)) p.setAttribute("aria-expanded", "true");
      applyFolds(tree);
      select(tree, chosen, { open: false });
    }
    document.addEventListener("click", (event) => {
      const action = event.target.closest("[data-tree-action]");
      if (!action) return;
      const expand = action.dataset.treeAction === "expand";
      for (const r of tree.querySelectorAll(".span-row[aria-expanded]")) {
        r.setAttribute("aria-expanded", expand || depth(r) === 0 ? "true" : "false");
      }
      applyFolds(tree);
    });
  }

  // A trace list row opens its trace wherever it is clicked (links inside work as usual).
  document.addEventListener("click", (event) => {
    const row = event.target.closest("tr.trace-row");
    if (!row || event.target.closest("a, button") || window.getSelection().toString()) return;
    const link = row.querySelector("a.trace-name");
    if (link) window.location.assign(link.href);
  });

  // "/" jumps to the search box, as in most tools engineers use.
  document.addEventListener("keydown", (event) => {
    const box = document.getElementById("q");
    if (event.key !== "/" || !box || event.target.closest("input, select, textarea")) return;
    event.preventDefault();
    box.focus();
    box.select();
  });

  // Deferred, so the page is parsed: place it before its first paint where possible;
  // htmx.onLoad then places every fragment htmx swaps in (the tree's later chunks).
  place(document);
  htmx.onLoad(place);

  document.addEventListener("DOMContentLoaded", () => {
    const tree = document.getElementById("tree");
    if (tree) initTree(tree);
  });
  // A chunk of rows arrived: keep folded subtrees folded.
  document.addEventListener("htmx:afterSettle", () => {
    const tree = document.getElementById("tree");
    if (tree) applyFolds(tree);
  });
})();

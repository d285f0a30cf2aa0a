// Search ranking: a page whose own title holds every word of the query comes first, a guide before
// any other page (the export guide for "onnx", the runs guide for "resume"). Sphinx replaces its
// default Scorer with this one (html_search_scorer in docs/conf.py), so every weight is stated.
var Scorer = {
  score: (result) => {
    const [docname, title, anchor, descr, score] = result;
    const query = new URLSearchParams(window.location.search).get("q") || "";
    const words = query.toLowerCase().split(/[^a-z0-9]+/).filter((w) => w.length > 1);
    // "fine-tune" meets "fine-tuning", "resume" meets "resumes": each word less its last letter
    const held = words.length > 0 && words.every((w) => title.toLowerCase().includes(w.slice(0, Math.max(3, w.length - 1))));
    const page = !anchor || anchor === "#";
    return score + (held && page ? 100 : 0) + (held && page && docname.startsWith("guides/") ? 20 : 0);
  },
  objNameMatch: 11,
  objPartialMatch: 6,
  objPrio: { 0: 15, 1: 5, 2: -5 },
  objPrioDefault: 0,
  title: 15,
  partialTitle: 7,
  term: 5,
  partialTerm: 2,
};

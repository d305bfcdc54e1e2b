// The drafter's data plane in C++: n-gram tries, per-request writer state, consensus scoring,
// best-first draft trees and their row layout. Policy (groups, tenants, corpus generations, merge
// pacing) stays in Python (drafting/drafter.py, drafting/sources.py); this file is the hot path.
//
// It is a line-by-line counterpart of the Python reference (drafting/trie.py, drafting/tree.py,
// drafting/core.py::PythonCore): same node numbering, same child order (insertion order), same
// floating-point operations in the same order (built with -ffp-contract=off), same tie-breaking.
// tests/drafting/test_native_core.py requires identical drafts from both.
//
// C ABI only (loaded with ctypes by binding.py): no Python headers, so one build serves every
// Python version. Handles are small integers into slot tables; the binding owns their lifetimes.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <queue>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

constexpr int32_t kAbiVersion = 9;
constexpr int32_t kMixed = -1;        // owner code: two or more requests wrote the n-gram
constexpr int32_t kPrompt = -2;       // owner code: only the group's prompt wrote it
constexpr int32_t kRoot = 0;
constexpr int32_t kGlobal = INT32_MIN;  // owner of a global-corpus source: no requesting path
constexpr int kWide = 16;  // nodes with more children score only their 2 x max_branch most frequent
constexpr int kMaxSources = 3;  // group match + two global generations
enum Label : int32_t { kSibling = 0, kGlobalLabel = 1, kOwn = 2 };

// Mirrors DraftConfig's derived settings (binding.py fills it; field order is the ABI).
struct CoreConfig {
  int32_t num_draft_tokens;   // tree nodes per request, root included
  int32_t trie_depth;         // n-gram length the tries hold
  int32_t max_match;          // longest context matched
  int32_t min_match;          // shortest context matched
  int32_t global_min_match;   // shortest context matched in the global corpus
  int32_t global_below;       // consult the global corpus when the group match is shorter than this
  int32_t fuzzy_max_edits;    // edits allowed in a fuzzy group match (0: exact only)
  int32_t max_branch;         // children kept per draft node
  int32_t max_depth;          // draft depth below the root
  int32_t use_siblings;       // draft from siblings
  int32_t use_global;         // draft from the tenant's global corpus
  int32_t use_own;            // draft from the path's own history
  int32_t group_max_nodes;    // a group trie stops growing past this many nodes
  double alpha;               // weight of the recorded model probability against frequency
  double prior;               // evidence pseudo-count
  double depth_prior;         // matched-length pseudo-count
  double min_score;           // nodes must score above this
  double sibling_weight;      // trust in siblings' n-grams
  double own_weight;          // trust in the path's own n-grams
  double global_weight;       // trust in the global corpus
};

int32_t combine_owners(int32_t current, int32_t writer) {
  if (current == writer || current == kMixed) return current;
  if (writer == kPrompt) return current >= 0 ? -3 - current : current;
  if (current == kPrompt || current == -3 - writer) return -3 - writer;
  return kMixed;
}

// (parent, token) -> child for the children of nodes with two or more (an only child is found
// through its parent, see Trie::child), open addressing with linear probing.
class EdgeMap {
 public:
  EdgeMap() { rehash(64); }

  int32_t find(int32_t parent, int32_t token) const {
    const uint64_t key = pack(parent, token);
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return slots_[i].value;
      if (slots_[i].key == kEmpty) return -1;
    }
  }

  void insert(int32_t parent, int32_t token, int32_t child) {
    if (2 * (size_ + 1) > slots_.size()) rehash(2 * slots_.size());
    place(pack(parent, token), child);
    ++size_;
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pack(int32_t parent, int32_t token) {
    return (uint64_t(uint32_t(parent)) << 32) | uint32_t(token);
  }
  size_t slot(uint64_t key) const {  // splitmix64's finaliser: every key bit moves every slot bit
    uint64_t h = key;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return size_t(h) & mask_;
  }
  struct Slot {
    uint64_t key;
    int32_t value;
  };
  void place(uint64_t key, int32_t value) {
    size_t i = slot(key);
    while (slots_[i].key != kEmpty) i = (i + 1) & mask_;
    slots_[i] = Slot{key, value};
  }
  void rehash(size_t capacity) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(capacity, Slot{kEmpty, 0});
    mask_ = capacity - 1;
    for (const Slot& entry : old)
      if (entry.key != kEmpty) place(entry.key, entry.value);
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

using Kid = std::pair<int32_t, int32_t>;  // (token, child)

// One trie node; field meanings as in drafting/trie.py. Aligned to a cache line, which all its
// fields share (the trie is walked at random: one miss per node visited, not one or two per
// field; unaligned, six nodes in eight would straddle two lines).
struct alignas(64) Node {
  int64_t count;         // times the n-gram root->node was written
  int64_t child_total;   // sum of the children's counts
  int64_t prob_count;    // recorded model probabilities of the last token
  double prob_sum;       // and their sum
  int32_t owner;         // who wrote it (slot >= 0, kPrompt, -3 - slot, kMixed)
  int32_t token;         // the edge token from the parent
  int32_t first_child;   // children form a singly linked list in insertion order
  int32_t last_child;
  int32_t next_sibling;
  int32_t num_kids;
};

// The n-gram trie: nodes in one array (node 0 the root) and a (parent, token) -> child map for
// nodes with several children.
struct Trie {
  std::vector<Node> nodes;
  EdgeMap edges;
  int32_t members = 0;  // paths ever added to the owning group (> 1: sibling evidence)
  std::unordered_map<int32_t, std::pair<int64_t, std::vector<Kid>>> wide_cache;

  Trie() { nodes.push_back(Node{0, 0, 0, 0.0, kMixed, 0, -1, -1, -1, 0}); }

  int32_t size() const { return int32_t(nodes.size()); }
  // An only child is found through its parent (most nodes deep in a trie have one): the edge map
  // holds the children of nodes with two or more.
  int32_t child(int32_t node, int32_t tok) const {
    const Node& parent = nodes[node];
    if (parent.num_kids <= 1) return parent.num_kids && nodes[parent.first_child].token == tok ? parent.first_child : -1;
    return edges.find(node, tok);
  }

  int32_t add_child(int32_t node, int32_t tok, int64_t cnt, double psum, int64_t pcnt, int32_t own) {
    const int32_t id = size();
    nodes.push_back(Node{cnt, 0, pcnt, psum, own, tok, -1, -1, -1, 0});
    Node& parent = nodes[node];
    if (parent.num_kids == 0) {
      parent.first_child = id;
    } else {
      if (parent.num_kids == 1) edges.insert(node, nodes[parent.first_child].token, parent.first_child);
      nodes[parent.last_child].next_sibling = id;
      edges.insert(node, tok, id);
    }
    parent.last_child = id;
    ++parent.num_kids;
    return id;
  }

  template <class F> void for_kids(int32_t node, F&& f) const {
    for (int32_t c = nodes[node].num_kids ? nodes[node].first_child : -1; c >= 0; c = nodes[c].next_sibling)
      f(nodes[c].token, c);
  }
};

// The 2 x max_branch most frequent children of a wide node (stable), cached per child total.
const std::vector<Kid>& frequent_children(Trie& t, int32_t node, int max_branch) {
  const int64_t stamp = t.nodes[node].child_total;
  auto& entry = t.wide_cache[node];
  if (!entry.second.empty() && entry.first == stamp) return entry.second;
  std::vector<Kid> kids;
  t.for_kids(node, [&](int32_t tok, int32_t c) { kids.emplace_back(tok, c); });
  std::stable_sort(kids.begin(), kids.end(),
                   [&](const Kid& a, const Kid& b) { return t.nodes[a.second].count > t.nodes[b.second].count; });
  if (kids.size() > size_t(2 * max_branch)) kids.resize(2 * max_branch);
  entry.first = stamp;
  entry.second = std::move(kids);
  return entry.second;
}

// trie.advance: write `tok` after every suffix in `active`; the new pointers into `out`.
void advance(Trie& t, const std::vector<int32_t>& active, int32_t tok, bool has_prob, double prob,
             int32_t owner, int depth, std::vector<int32_t>& out) {
  out.clear();
  out.push_back(kRoot);
  for (int32_t node : active) {
    int32_t c = t.child(node, tok);
    if (c < 0) {
      c = t.add_child(node, tok, 1, has_prob ? prob : 0.0, has_prob ? 1 : 0, owner);
    } else {
      t.nodes[c].count += 1;
      if (has_prob) { t.nodes[c].prob_sum += prob; t.nodes[c].prob_count += 1; }
      if (t.nodes[c].owner != owner) t.nodes[c].owner = combine_owners(t.nodes[c].owner, owner);
    }
    t.nodes[node].child_total += 1;
    out.push_back(c);
  }
  if (int(out.size()) > depth) out.pop_back();
}

// trie.follow: move the pointers without writing.
void follow(const Trie& t, const std::vector<int32_t>& active, int32_t tok, int depth, std::vector<int32_t>& out) {
  out.clear();
  out.push_back(kRoot);
  for (int32_t node : active) {
    const int32_t c = t.child(node, tok);
    if (c < 0) break;
    out.push_back(c);
  }
  if (int(out.size()) > depth) out.pop_back();
}

// core.py::_write_many. probs: nullptr, or one per token with NaN for "not recorded". `next`:
// scratch for the new pointers (its buffer and the request's swap turns; no allocation per call).
void write_many(Trie& t, std::vector<int32_t>& active, const int32_t* tokens, int64_t n, const double* probs,
                int32_t owner, int depth, int32_t max_nodes, std::vector<int32_t>& next) {
  for (int64_t i = 0; i < n; ++i) {
    if (t.size() > max_nodes) {
      for (int64_t j = i; j < n; ++j) { follow(t, active, tokens[j], depth, next); active.swap(next); }
      return;
    }
    const bool has_prob = probs != nullptr && !std::isnan(probs[i]);
    advance(t, active, tokens[i], has_prob, has_prob ? probs[i] : 0.0, owner, depth, next);
    active.swap(next);
  }
}

int32_t walk(const Trie& t, const int32_t* tokens, int n) {
  int32_t node = kRoot;
  for (int i = 0; i < n; ++i) {
    node = t.child(node, tokens[i]);
    if (node < 0) return -1;
  }
  return node;
}

// trie.longest_match: deepest node of a suffix of `tail` (length in [min_len, max_len]) with continuations.
std::pair<int32_t, int> longest_match(const Trie& t, const std::vector<int32_t>& tail, int max_len, int min_len) {
  const int n = int(tail.size());
  for (int length = std::min(max_len, n); length >= min_len; --length) {
    const int32_t node = walk(t, tail.data() + n - length, length);
    if (node >= 0 && t.nodes[node].child_total > 0) return {node, length};
  }
  return {-1, 0};
}

// trie._fuzzy_walk: (node, edits used), fewest edits first; node -1 if none.
std::pair<int32_t, int> fuzzy_walk(const Trie& t, int32_t node, const int32_t* query, int qlen, int i, int edits,
                                   int max_branch) {
  if (i == qlen) return t.nodes[node].child_total > 0 ? std::make_pair(node, 0) : std::make_pair(-1, 0);
  std::pair<int32_t, int> best{-1, 0};
  const int32_t exact = t.child(node, query[i]);
  if (exact >= 0) {
    best = fuzzy_walk(t, exact, query, qlen, i + 1, edits, max_branch);
    if (best.first >= 0 && best.second == 0) return best;
  }
  if (edits == 0 || i == qlen - 1) return best;
  std::vector<Kid> kids;
  t.for_kids(node, [&](int32_t tok, int32_t c) { kids.emplace_back(tok, c); });
  std::stable_sort(kids.begin(), kids.end(),
                   [&](const Kid& a, const Kid& b) { return t.nodes[a.second].count > t.nodes[b.second].count; });
  if (kids.size() > size_t(max_branch)) kids.resize(max_branch);
  std::vector<std::pair<int32_t, int>> options;
  for (const Kid& kid : kids) {
    if (kid.first != query[i]) options.emplace_back(kid.second, i + 1);  // substitution
    options.emplace_back(kid.second, i);                                // an extra token in the trie
  }
  options.emplace_back(node, i + 1);  // a token missing from the trie
  for (const auto& [next, j] : options) {
    const auto found = fuzzy_walk(t, next, query, qlen, j, edits - 1, max_branch);
    if (found.first >= 0) {
      const int total = found.second + 1;
      if (best.first < 0 || total < best.second) best = {found.first, total};
    }
  }
  return best;
}

std::pair<int32_t, int> fuzzy_match(const Trie& t, const std::vector<int32_t>& tail, int max_len, int min_len,
                                    int max_edits, int max_branch) {
  const int n = int(tail.size());
  for (int length = std::min(max_len, n); length >= min_len; --length) {
    const auto found = fuzzy_walk(t, kRoot, tail.data() + n - length, length, 0, max_edits, max_branch);
    if (found.first >= 0) return {found.first, length};
  }
  return {-1, 0};
}

// tree.Source
struct Source {
  Trie* trie;
  int32_t node;
  int32_t depth;
  double other_weight;
  double own_weight;
  int32_t owner;  // kGlobal for the global corpus
};

// tree.Continuation; `children` are already the next level's sources (node = child, depth + 1).
struct Continuation {
  double score;
  int32_t token;
  double best;  // largest single contribution: decides the label
  int32_t label;
  int32_t num_children;
  Source children[kMaxSources];
};

// tree.score_children: the one place the score is written (see tree.py for the formula).
void score_children(const Source* sources, int num_sources, const CoreConfig& cfg, std::vector<Continuation>& out) {
  out.clear();
  const double alpha = cfg.alpha, beta = 1.0 - alpha;
  double remaining = 1.0;
  for (int s = 0; s < num_sources; ++s) {
    const Source& src = sources[s];
    Trie& t = *src.trie;
    const double total = double(t.nodes[src.node].child_total);
    const double depth = double(src.depth);
    double evidence = src.other_weight * total / (total + cfg.prior) * depth / (depth + cfg.depth_prior);
    if (evidence > 1.0) evidence = 1.0;
    const double share = remaining * evidence;
    remaining -= share;
    if (share <= 0.0) continue;
    const double scale = share / total;
    const double own_scale = src.other_weight > 0.0 ? src.own_weight / src.other_weight : 0.0;
    auto visit = [&](int32_t tok, int32_t c) {
      const int64_t pc = t.nodes[c].prob_count;
      double contribution = pc ? (alpha * total * t.nodes[c].prob_sum / double(pc) + beta * double(t.nodes[c].count)) * scale
                               : double(t.nodes[c].count) * scale;
      int32_t label;
      if (src.owner == kGlobal) {
        label = kGlobalLabel;
      } else {
        const int32_t writer = t.nodes[c].owner;
        if (writer == src.owner || writer == kPrompt || writer == -3 - src.owner) {
          if (!cfg.use_own) return;
          contribution *= own_scale;
          label = kOwn;
        } else {
          if (!cfg.use_siblings) return;
          label = kSibling;
        }
      }
      const Source child{src.trie, c, src.depth + 1, src.other_weight, src.own_weight, src.owner};
      for (Continuation& entry : out) {
        if (entry.token == tok) {
          entry.score += contribution;
          entry.children[entry.num_children++] = child;
          if (contribution > entry.best) { entry.best = contribution; entry.label = label; }
          return;
        }
      }
      Continuation entry;
      entry.score = contribution;
      entry.token = tok;
      entry.best = contribution;
      entry.label = label;
      entry.num_children = 1;
      entry.children[0] = child;
      out.push_back(entry);
    };
    if (t.nodes[src.node].num_kids <= kWide) {
      t.for_kids(src.node, visit);
    } else {
      for (const Kid& kid : frequent_children(t, src.node, cfg.max_branch)) visit(kid.first, kid.second);
    }
  }
  if (out.size() > size_t(cfg.max_branch)) {
    std::stable_sort(out.begin(), out.end(),
                     [](const Continuation& a, const Continuation& b) { return a.score > b.score; });
    out.resize(cfg.max_branch);
  }
}

// A node waiting in the frontier. Its sources for the next level (up to kMaxSources) wait in
// TreeBuilder::waiting, so the heap moves small items.
struct FrontierItem {
  double score;
  int64_t tick;
  int32_t parent;
  int32_t token;
  int32_t label;
  int32_t first_source;  // index into TreeBuilder::waiting
  int32_t num_sources;
};

struct FrontierOrder {  // highest score first, then push order
  bool operator()(const FrontierItem& a, const FrontierItem& b) const {
    return a.score < b.score || (a.score == b.score && a.tick > b.tick);
  }
};

// One request's best-first candidates (a row of the [batch, n] output arrays).
struct Row {
  int32_t* tokens;
  int32_t* parents;
  int32_t* depths;
  int32_t* labels;
  double* scores;
  int32_t length = 0;
  void add(int32_t tok, int32_t parent, int32_t depth, int32_t label, double score) {
    tokens[length] = tok; parents[length] = parent; depths[length] = depth; labels[length] = label;
    scores[length] = score;
    ++length;
  }
};

struct TreeBuilder {
  std::priority_queue<FrontierItem, std::vector<FrontierItem>, FrontierOrder> frontier;
  std::vector<Continuation> scored;
  std::vector<Source> waiting;  // the next-level sources of every item pushed for this row

  void push_all(double path_score, int32_t parent, const CoreConfig& cfg, int64_t& tick) {
    for (const Continuation& c : scored) {
      const double score = path_score * c.score;
      if (score > cfg.min_score) {
        frontier.push(FrontierItem{score, tick++, parent, c.token, c.label, int32_t(waiting.size()), c.num_children});
        waiting.insert(waiting.end(), c.children, c.children + c.num_children);
      }
    }
  }

  // tree.build_tree
  void build(int32_t root, const Source* sources, int num_sources, const CoreConfig& cfg, Row& row) {
    const int n = cfg.num_draft_tokens;
    row.add(root, -1, 0, -1, 1.0);
    if (n <= 1 || num_sources == 0) return;
    frontier = decltype(frontier)();
    waiting.clear();
    int64_t tick = 0;
    score_children(sources, num_sources, cfg, scored);
    push_all(1.0, 0, cfg, tick);  // 1.0 * score == score
    int32_t index = 0;
    Source next[kMaxSources];
    while (!frontier.empty()) {
      const FrontierItem item = frontier.top();
      frontier.pop();
      ++index;
      const int32_t depth = row.depths[item.parent] + 1;
      row.add(item.token, item.parent, depth, item.label, item.score);
      if (index + 1 >= n) break;
      if (depth >= cfg.max_depth) continue;
      int count = 0;
      for (int k = 0; k < item.num_sources; ++k) {
        const Source& source = waiting[item.first_source + k];
        if (source.trie->nodes[source.node].child_total) next[count++] = source;
      }
      if (count == 0) continue;
      score_children(next, count, cfg, scored);
      push_all(item.score, index, cfg, tick);
    }
  }
};

struct Corpus {
  int32_t current = -1;
  int32_t previous = -1;
};

struct Request {
  int32_t trie;
  int32_t corpus;
  int32_t slot;
  std::vector<int32_t> active;
  std::vector<int32_t> tail;
};

struct MergeFrame {
  int32_t cursor;  // next source child to visit (-1: done)
  int32_t destination;  // destination node the children go under
  int32_t depth;
};

struct MergeJob {
  int32_t source;
  int32_t destination;
  std::vector<MergeFrame> stack;
};

template <class T> struct SlotTable {
  std::vector<std::unique_ptr<T>> items;
  std::vector<int32_t> free_ids;
  int32_t add(std::unique_ptr<T> item) {
    if (!free_ids.empty()) {
      const int32_t id = free_ids.back();
      free_ids.pop_back();
      items[id] = std::move(item);
      return id;
    }
    items.push_back(std::move(item));
    return int32_t(items.size() - 1);
  }
  void remove(int32_t id) {
    if (id >= 0 && size_t(id) < items.size() && items[id]) { items[id].reset(); free_ids.push_back(id); }
  }
  T& operator[](int32_t id) { return *items[id]; }
  bool valid(int32_t id) const { return id >= 0 && size_t(id) < items.size() && items[id] != nullptr; }
};

// What the core's time is spent on, for the metrics (sgc_core_busy; binding.CORE_WORK names them).
enum Work : int32_t { kWrites = 0, kProposals = 1, kMerges = 2, kNumWork = 3 };

struct Core {
  CoreConfig cfg;
  SlotTable<Trie> tries;
  SlotTable<Corpus> corpora;
  SlotTable<Request> requests;
  SlotTable<MergeJob> merges;
  TreeBuilder builder;
  std::vector<int32_t> scratch;  // write_many's next pointers
  double busy_seconds[kNumWork] = {};  // wall time inside the calls of each kind of work
  int64_t busy_calls[kNumWork] = {};

  // core.py::PythonCore._sources
  int sources(const Request& r, Source* out) {
    int n = 0;
    Trie& group = tries[r.trie];
    const bool own_only = group.members <= 1;
    if (cfg.use_own || (cfg.use_siblings && !own_only)) {
      int32_t node = -1;
      int depth = 0;
      for (int d = std::min(int(r.active.size()) - 1, cfg.max_match); d >= cfg.min_match; --d) {
        if (group.nodes[r.active[d]].child_total) { node = r.active[d]; depth = d; break; }
      }
      if (node < 0 && cfg.fuzzy_max_edits) {
        const auto found = fuzzy_match(group, r.tail, cfg.max_match, cfg.min_match, cfg.fuzzy_max_edits, cfg.max_branch);
        node = found.first;
        depth = found.second;
      }
      if (node >= 0) {
        out[n++] = Source{&group, node, depth, own_only ? cfg.own_weight : cfg.sibling_weight, cfg.own_weight, r.slot};
      }
    }
    if (cfg.use_global && (n == 0 || out[0].depth < cfg.global_below)) {
      const Corpus& corpus = corpora[r.corpus];
      for (int32_t generation : {corpus.current, corpus.previous}) {
        if (generation < 0) continue;
        Trie& t = tries[generation];
        if (t.nodes[kRoot].child_total == 0) continue;
        const auto found = longest_match(t, r.tail, cfg.max_match, cfg.global_min_match);
        if (found.first >= 0) {
          out[n++] = Source{&t, found.first, found.second, cfg.global_weight, cfg.global_weight, kGlobal};
        }
      }
      if (n > 1) {
        std::stable_sort(out, out + n, [](const Source& a, const Source& b) {
          return a.depth > b.depth || (a.depth == b.depth && a.other_weight > b.other_weight);
        });
      }
    }
    return n;
  }
};

// Adds the wall time of its scope to one kind of the core's work (two clock reads per call).
class BusyTimer {
 public:
  BusyTimer(Core& core, Work work) : core_(core), work_(work), start_(std::chrono::steady_clock::now()) {}
  ~BusyTimer() {
    core_.busy_seconds[work_] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    ++core_.busy_calls[work_];
  }
  BusyTimer(const BusyTimer&) = delete;
  BusyTimer& operator=(const BusyTimer&) = delete;

 private:
  Core& core_;
  Work work_;
  std::chrono::steady_clock::time_point start_;
};

// trie.merge_step over a MergeJob; returns children visited.
int64_t merge_step(Core& core, MergeJob& job, int64_t budget, int64_t min_count, int32_t max_depth) {
  Trie& src = core.tries[job.source];
  Trie& dst = core.tries[job.destination];
  int64_t visited = 0;
  while (!job.stack.empty() && visited < budget) {
    MergeFrame frame = job.stack.back();
    job.stack.pop_back();
    const bool deeper = frame.depth < max_depth;
    bool finished = true;
    int32_t s = frame.cursor;
    while (s >= 0) {
      const int32_t next = src.nodes[s].next_sibling;
      ++visited;
      const int64_t cnt = src.nodes[s].count;
      if (cnt >= min_count && src.nodes[s].owner != kPrompt) {
        int32_t d = dst.child(frame.destination, src.nodes[s].token);
        if (d < 0) {
          d = dst.add_child(frame.destination, src.nodes[s].token, cnt, src.nodes[s].prob_sum, src.nodes[s].prob_count, kMixed);
        } else {
          dst.nodes[d].count += cnt;
          if (src.nodes[s].prob_count) { dst.nodes[d].prob_sum += src.nodes[s].prob_sum; dst.nodes[d].prob_count += src.nodes[s].prob_count; }
        }
        dst.nodes[frame.destination].child_total += cnt;
        if (deeper && src.nodes[s].num_kids) job.stack.push_back(MergeFrame{src.nodes[s].first_child, d, frame.depth + 1});
      }
      s = next;
      if (visited >= budget) { finished = false; break; }
    }
    if (!finished) job.stack.push_back(MergeFrame{s, frame.destination, frame.depth});
  }
  return visited;
}

// The accepted path of one row: from the root, at each committed token the first node (lowest
// index below `nodes`) whose parent is the current node and whose token it is; stops at the first
// token with none. Marks the path's nodes in `walked`.
void walk_committed(const int32_t* tokens, const int32_t* parents, int nodes, const int64_t* committed,
                    int64_t count, uint8_t* walked) {
  int32_t node = 0;
  for (int64_t k = 0; k < count; ++k) {
    int32_t next = -1;
    for (int i = 1; i < nodes; ++i) {
      if (parents[i] == node && tokens[i] == committed[k]) {
        next = i;
        break;
      }
    }
    if (next < 0) return;
    walked[next] = 1;
    node = next;
  }
}

}  // namespace

// No C++ exception may cross the C ABI: an allocation failure becomes the function's failure value.
#define GUARD(failure, ...) \
  try { __VA_ARGS__ } catch (...) { return failure; }

#pragma GCC visibility push(default)  // the C ABI below is all the library exports
extern "C" {

int32_t sgc_abi_version() { return kAbiVersion; }

void* sgc_core_new(const CoreConfig* cfg) {
  GUARD(nullptr, {
    auto* core = new Core();
    core->cfg = *cfg;
    return core;
  })
}

void sgc_core_free(void* core) { delete static_cast<Core*>(core); }

// The core's busy time so far: seconds[k] and calls[k] for the first min(n, kNumWork) kinds of
// work (Work: trie writes, proposals, merges); returns kNumWork.
int32_t sgc_core_busy(void* c, double* seconds, int64_t* calls, int32_t n) {
  const Core& core = *static_cast<Core*>(c);
  for (int32_t k = 0; k < std::min<int32_t>(n, kNumWork); ++k) {
    seconds[k] = core.busy_seconds[k];
    calls[k] = core.busy_calls[k];
  }
  return kNumWork;
}

int32_t sgc_trie_new(void* c) {
  GUARD(-1, { return static_cast<Core*>(c)->tries.add(std::make_unique<Trie>()); })
}

void sgc_trie_free(void* c, int32_t trie) { static_cast<Core*>(c)->tries.remove(trie); }

int64_t sgc_trie_nodes(void* c, int32_t trie) { return static_cast<Core*>(c)->tries[trie].size() - 1; }

void sgc_trie_set_members(void* c, int32_t trie, int32_t members) { static_cast<Core*>(c)->tries[trie].members = members; }

// Write tokens without probabilities (prompts) after `active`; the new pointers go to `out`
// (room for trie_depth entries); returns their number, or -1 on failure.
int32_t sgc_trie_write(void* c, int32_t trie, const int32_t* active, int32_t num_active, const int32_t* tokens,
                       int64_t num_tokens, int32_t owner, int32_t* out) {
  GUARD(-1, {
    Core& core = *static_cast<Core*>(c);
    std::vector<int32_t> pointers(active, active + num_active);
    write_many(core.tries[trie], pointers, tokens, num_tokens, nullptr, owner, core.cfg.trie_depth,
               core.cfg.group_max_nodes, core.scratch);
    std::copy(pointers.begin(), pointers.end(), out);
    return int32_t(pointers.size());
  })
}

int32_t sgc_corpus_new(void* c) {
  GUARD(-1, { return static_cast<Core*>(c)->corpora.add(std::make_unique<Corpus>()); })
}

void sgc_corpus_free(void* c, int32_t corpus) { static_cast<Core*>(c)->corpora.remove(corpus); }

void sgc_corpus_set(void* c, int32_t corpus, int32_t current, int32_t previous) {
  Corpus& target = static_cast<Core*>(c)->corpora[corpus];
  target.current = current;
  target.previous = previous;
}

int32_t sgc_request_new(void* c, int32_t trie, int32_t corpus, int32_t slot, const int32_t* active,
                        int32_t num_active, const int32_t* tail, int32_t num_tail) {
  GUARD(-1, {
    auto r = std::make_unique<Request>();
    r->trie = trie;
    r->corpus = corpus;
    r->slot = slot;
    r->active.assign(active, active + num_active);
    r->tail.assign(tail, tail + num_tail);
    return static_cast<Core*>(c)->requests.add(std::move(r));
  })
}

void sgc_request_free(void* c, int32_t request) { static_cast<Core*>(c)->requests.remove(request); }

int32_t sgc_request_last(void* c, int32_t request) {
  return static_cast<Core*>(c)->requests[request].tail.back();  // never empty: it starts with the prompt
}

// Per request i: tokens[offsets[i]:offsets[i+1]] (probs alike, NaN = not recorded; probs may be null).
int32_t sgc_extend_batch(void* c, const int32_t* requests, int32_t num_requests, const int64_t* offsets,
                         const int32_t* tokens, const double* probs) {
  GUARD(-1, {
    Core& core = *static_cast<Core*>(c);
    const BusyTimer timer(core, kWrites);
    const int depth = core.cfg.trie_depth;
    for (int32_t i = 0; i < num_requests; ++i) {
      Request& r = core.requests[requests[i]];
      const int64_t start = offsets[i], n = offsets[i + 1] - offsets[i];
      write_many(core.tries[r.trie], r.active, tokens + start, n, probs ? probs + start : nullptr, r.slot, depth,
                 core.cfg.group_max_nodes, core.scratch);
      r.tail.insert(r.tail.end(), tokens + start, tokens + start + n);
      if (int(r.tail.size()) > 2 * depth) r.tail.erase(r.tail.begin(), r.tail.end() - depth);
    }
    return 0;
  })
}

// The worker's common step in one call (PythonCore.extend_rows is the reference), in the layout
// a verify leaves its committed tokens in: request i (requests[i]) gets tokens[i * stride ..
// i * stride + lens[i]). `logprobs` (nullptr: none known) holds `lp_stride` values per request: the
// target's logprobs of request i's newest known[i] tokens; a row with more of them than new
// tokens, or with a NaN among them, is not used (those tokens go in by frequency alone). Every
// input is checked before anything is written: a bad one sets info = {kind, index} and returns -2
// (kind 1: a token outside [0, 2^31 - 1], index i * stride + j; kind 2: lens[i] outside
// [0, stride], index i; kind 3: known[i] above lp_stride, index i). Otherwise returns how many
// tokens were written with a probability (their probabilities' sum in *prob_sum), how many were
// written in all in info[2], and each request's last token afterwards in last[i] (the next
// tree's root).
int64_t sgc_extend_rows(void* c, const int32_t* requests, int32_t num_requests, const int64_t* tokens, int64_t stride,
                        const int64_t* lens, const double* logprobs, int64_t lp_stride, const int64_t* known,
                        double* prob_sum, int64_t* info, int64_t* last) {
  GUARD(-1, {
    Core& core = *static_cast<Core*>(c);
    const BusyTimer timer(core, kWrites);
    for (int32_t i = 0; i < num_requests; ++i) {
      if (lens[i] < 0 || lens[i] > stride) { info[0] = 2; info[1] = i; return -2; }
      if (logprobs && known[i] > lp_stride) { info[0] = 3; info[1] = i; return -2; }
      const int64_t* row = tokens + int64_t(i) * stride;
      for (int64_t j = 0; j < lens[i]; ++j)
        if (row[j] < 0 || row[j] > INT32_MAX) { info[0] = 1; info[1] = int64_t(i) * stride + j; return -2; }
    }
    const int depth = core.cfg.trie_depth;
    std::vector<int32_t> row;
    std::vector<double> probs;
    int64_t with_prob = 0, written = 0;
    double sum = 0.0;
    for (int32_t i = 0; i < num_requests; ++i) {
      Request& r = core.requests[requests[i]];
      const int64_t n = lens[i];
      if (n == 0) {
        last[i] = r.tail.back();
        continue;
      }
      const int64_t* start = tokens + int64_t(i) * stride;
      row.assign(start, start + n);
      written += n;
      int64_t k = logprobs ? known[i] : 0;
      if (k > n || k < 0) k = 0;
      const double* values = logprobs ? logprobs + int64_t(i) * lp_stride : nullptr;
      for (int64_t j = 0; j < k; ++j)
        if (std::isnan(values[j])) { k = 0; break; }
      const double* row_probs = nullptr;
      if (k > 0) {
        probs.assign(n, std::nan(""));
        for (int64_t j = 0; j < k; ++j) {  // as Python's math.exp(min(value, 0.0))
          const double p = std::exp(std::min(values[j], 0.0));
          probs[n - k + j] = p;
          sum += p;
        }
        with_prob += k;
        row_probs = probs.data();
      }
      write_many(core.tries[r.trie], r.active, row.data(), n, row_probs, r.slot, depth, core.cfg.group_max_nodes, core.scratch);
      r.tail.insert(r.tail.end(), row.begin(), row.end());
      if (int(r.tail.size()) > 2 * depth) r.tail.erase(r.tail.begin(), r.tail.end() - depth);
      last[i] = r.tail.back();
    }
    *prob_sum = sum;
    info[2] = written;
    return with_prob;
  })
}

int32_t sgc_merge_new(void* c, int32_t source, int32_t destination) {
  GUARD(-1, {
    Core& core = *static_cast<Core*>(c);
    auto job = std::make_unique<MergeJob>();
    job->source = source;
    job->destination = destination;
    const Trie& src = core.tries[source];
    if (src.nodes[kRoot].num_kids) job->stack.push_back(MergeFrame{src.nodes[kRoot].first_child, kRoot, 1});
    return core.merges.add(std::move(job));
  })
}

void sgc_merge_free(void* c, int32_t job) { static_cast<Core*>(c)->merges.remove(job); }

// Returns children visited (-1 on failure); *finished = 1 once the job is done.
int64_t sgc_merge_step(void* c, int32_t job, int64_t budget, int64_t min_count, int32_t max_depth, int32_t* finished) {
  GUARD(-1, {
    Core& core = *static_cast<Core*>(c);
    const BusyTimer timer(core, kMerges);
    MergeJob& merge = core.merges[job];
    const int64_t visited = merge_step(core, merge, budget, min_count, max_depth);
    *finished = merge.stack.empty() ? 1 : 0;
    return visited;
  })
}

// Candidates for a batch: [batch, n] arrays (n = num_draft_tokens), zero past each row's length.
// With `edges` (num_edges rising values; nullptr: none), also the batch's sum at each rank
// k = 1 .. n - 1 of a piecewise-linear weight of the rank-k score (0.0 past a row's length):
// rank_sums[k - 1] = sum over rows of intercepts[slot] + slopes[slot] * score, slot = how many
// edges are <= score (core.rank_weight_sums is the reference; the width policy's calibration).
// Edges that do not rise, or a weight that is not finite, return -2 before anything is proposed.
int32_t sgc_propose(void* c, const int32_t* requests, int32_t batch, int32_t* tokens, int32_t* parents,
                    int32_t* depths, int32_t* labels, double* scores, int32_t* lengths, const double* edges,
                    int32_t num_edges, const double* intercepts, const double* slopes, double* rank_sums) {
  GUARD(-1, {
    if (edges) {
      for (int32_t e = 0; e < num_edges; ++e)
        if (!std::isfinite(edges[e]) || (e > 0 && !(edges[e] > edges[e - 1]))) return -2;
      for (int32_t e = 0; e <= num_edges; ++e)
        if (!std::isfinite(intercepts[e]) || !std::isfinite(slopes[e])) return -2;
    }
    Core& core = *static_cast<Core*>(c);
    const BusyTimer timer(core, kProposals);
    const int n = core.cfg.num_draft_tokens;
    Source sources[kMaxSources];
    for (int32_t b = 0; b < batch; ++b) {
      const Request& r = core.requests[requests[b]];
      const int num_sources = core.sources(r, sources);
      const int64_t o = int64_t(b) * n;
      Row row{tokens + o, parents + o, depths + o, labels + o, scores + o};
      core.builder.build(r.tail.back(), sources, num_sources, core.cfg, row);
      for (int k = row.length; k < n; ++k) {
        row.tokens[k] = 0; row.parents[k] = 0; row.depths[k] = 0; row.labels[k] = 0; row.scores[k] = 0.0;
      }
      lengths[b] = row.length;
    }
    if (edges) {
      std::fill(rank_sums, rank_sums + std::max(n - 1, 0), 0.0);
      for (int32_t b = 0; b < batch; ++b) {
        const double* row_scores = scores + int64_t(b) * n;
        for (int k = 1; k < n; ++k) {
          const double score = row_scores[k];
          const int64_t slot = std::upper_bound(edges, edges + num_edges, score) - edges;
          const double product = slopes[slot] * score;  // apart, as NumPy computes it
          rank_sums[k - 1] += intercepts[slot] + product;
        }
      }
    }
    return 0;
  })
}

// core.layout_rows: the first min(budget, length) candidates of each row in BFS order (stable by
// depth), ancestor masks, detached token-0 padding, per-row label counts (4 labels) followed by
// the batch's totals (out_labels holds batch + 1 rows of 4).
int32_t sgc_layout(int32_t batch, int32_t n, const int32_t* tokens, const int32_t* parents, const int32_t* depths,
                   const int32_t* labels, const int32_t* lengths, int32_t width, const int32_t* budgets,
                   int64_t* out_tokens, uint8_t* out_mask, int64_t* out_labels) {
  GUARD(-1, {
    std::vector<int32_t> order, new_index;
    for (int32_t b = 0; b < batch; ++b) {
      const int64_t o = int64_t(b) * n;
      const int count = std::min(budgets ? budgets[b] : width, lengths[b]);
      order.resize(count);
      for (int i = 0; i < count; ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return depths[o + x] < depths[o + y]; });
      new_index.assign(count, 0);
      for (int i = 0; i < count; ++i) new_index[order[i]] = i;
      int64_t* row_tokens = out_tokens + int64_t(b) * width;
      uint8_t* mask = out_mask + int64_t(b) * width * width;
      int64_t* row_labels = out_labels + int64_t(b) * 4;
      std::memset(mask, 0, size_t(width) * width);
      std::fill(row_labels, row_labels + 4, 0);
      for (int i = 0; i < count; ++i) {
        const int32_t old = order[i];
        row_tokens[i] = tokens[o + old];
        const int32_t parent = parents[o + old] < 0 ? -1 : new_index[parents[o + old]];
        if (parent >= 0) std::memcpy(mask + int64_t(i) * width, mask + int64_t(parent) * width, width);
        mask[int64_t(i) * width + i] = 1;
        if (i > 0) row_labels[labels[o + old]] += 1;
      }
      for (int i = count; i < width; ++i) {
        row_tokens[i] = 0;
        mask[int64_t(i) * width + i] = 1;
      }
    }
    int64_t* totals = out_labels + int64_t(batch) * 4;
    std::fill(totals, totals + 4, 0);
    for (int32_t b = 0; b < batch; ++b)
      for (int k = 0; k < 4; ++k) totals[k] += out_labels[int64_t(b) * 4 + k];
    return 0;
  })
}

// core.accepted_rows: the nodes of each row's first min(width, length) candidates that row b's
// committed tokens (committed[offsets[b] .. offsets[b + 1])) walk through from the root: at each
// token, the first node (lowest index) whose parent is the current node and whose token it is;
// the walk stops at the first token with none. out_mask: batch x n bytes.
int32_t sgc_accepted(int32_t batch, int32_t n, const int32_t* tokens, const int32_t* parents, const int32_t* lengths,
                     int32_t width, const int64_t* offsets, const int64_t* committed, uint8_t* out_mask) {
  GUARD(-1, {
    std::memset(out_mask, 0, size_t(batch) * n);
    for (int32_t b = 0; b < batch; ++b) {
      const int64_t o = int64_t(b) * n;
      walk_committed(tokens + o, parents + o, std::min(width, lengths[b]), committed + offsets[b],
                     offsets[b + 1] - offsets[b], out_mask + o);
    }
    return 0;
  })
}

// core.outcome_rows: the verify's outcome of every real draft node (index 1 .. min(width, length) - 1)
// of each row with committed tokens (committed[b * stride .. b * stride + lens[b]), lens[b] > 0),
// in row order: its row, its score and whether the row's committed tokens walk through it (the
// walk of sgc_accepted). Returns the count.
int64_t sgc_outcomes(int32_t batch, int32_t n, const int32_t* tokens, const int32_t* parents, const int32_t* lengths,
                     const double* scores, int32_t width, const int64_t* committed, int64_t stride, const int64_t* lens,
                     int32_t* out_rows, double* out_scores, uint8_t* out_accepted) {
  GUARD(-1, {
    std::vector<uint8_t> walked(size_t(std::max(n, 1)));
    int64_t count = 0;
    for (int32_t b = 0; b < batch; ++b) {
      if (lens[b] <= 0) continue;
      const int64_t o = int64_t(b) * n;
      const int nodes = std::min(width, lengths[b]);
      std::fill(walked.begin(), walked.end(), 0);
      walk_committed(tokens + o, parents + o, nodes, committed + int64_t(b) * stride, std::min(lens[b], stride),
                     walked.data());
      for (int i = 1; i < nodes; ++i) {
        out_rows[count] = b;
        out_scores[count] = scores[o + i];
        out_accepted[count] = walked[i];
        ++count;
      }
    }
    return count;
  })
}

}  // extern "C"
#pragma GCC visibility pop

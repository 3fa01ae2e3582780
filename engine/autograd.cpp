// autograd.cpp: recording Nodes during forward, and the reverse topological walk.
#include "engine/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "engine/ops/accumulate.h"

namespace nimbus {

namespace {
thread_local bool t_grad_enabled = true;
thread_local LeafGradHook* t_leaf_hook = nullptr;
}

LeafGradHook::LeafGradHook(std::function<void(TensorImpl& leaf)> on_ready)
    : on_ready_(std::move(on_ready)), prev_(t_leaf_hook) {
  t_leaf_hook = this;
}
LeafGradHook::~LeafGradHook() { t_leaf_hook = prev_; }

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const char* op, const std::vector<Tensor>& inputs, Tensor& out, const std::vector<Tensor>& saved,
            BackwardFn backward) {
  if (!any_requires_grad(inputs)) return;
  auto node = std::make_shared<Node>();
  node->op = op;
  node->edges.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    Edge e;
    if (t.defined() && t.requires_grad()) {
      if (t.grad_fn()) e.fn = t.grad_fn();
      else e.leaf = t.impl_ptr();
      e.shape = t.shape();
    }
    node->edges.push_back(std::move(e));
  }
  node->backward = std::move(backward);
  for (const Tensor& t : saved)
    if (t.defined()) node->saved.push_back({t.impl()->storage, t.version(), t.shape()});
  TensorImpl* impl = out.impl();
  impl->grad_fn = std::move(node);
  impl->requires_grad = true;
}

namespace {
// Nodes reachable from root, ordered so that every node comes after all nodes
// that consume its output (iterative DFS post-order, reversed).
std::vector<Node*> topological_order(Node* root) {
  std::vector<Node*> post;
  std::unordered_set<Node*> seen{root};
  std::vector<std::pair<Node*, size_t>> stack{{root, 0}};
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->edges.size()) {
      Node* child = node->edges[next++].fn.get();
      if (child && seen.insert(child).second) stack.push_back({child, 0});
    } else {
      post.push_back(node);
      stack.pop_back();
    }
  }
  return {post.rbegin(), post.rend()};
}

// Whether `g` is the only handle on its memory: held by one Tensor (the caller's) and its storage by
// one TensorImpl. Such a gradient can be kept (or summed into) as it is; a shared one (add passes dy
// to both inputs; a view shares its input's storage) must be copied before anything writes into it.
bool sole_owner(const Tensor& g) { return g.impl_ptr().use_count() == 1 && g.impl()->storage.use_count() == 1; }

// The first gradient of a leaf is kept, not copied, when nothing else holds it (no copy on the device).
void accumulate_leaf(TensorImpl& leaf, Tensor g) {
  if (!leaf.grad) leaf.grad = sole_owner(g) ? g.impl_ptr() : g.clone().impl_ptr();
  else {
    Tensor acc(leaf.grad);
    add_inplace(acc, g);
  }
}
}  // namespace

void run_backward(const Tensor& root, const Tensor& grad_output) {
  NIMBUS_CHECK(root.requires_grad(), "backward: tensor ", describe(root),
               " does not require grad (no parameter or input with requires_grad reached it)");
  Tensor seed = grad_output;
  if (!seed.defined()) {
    NIMBUS_CHECK(root.numel() == 1, "backward: implicit gradient needs a 1-element output, got ", describe(root));
    seed = Tensor::ones(root.shape(), root.device()).to(root.dtype());  // a gradient has its tensor's dtype
  }
  NIMBUS_CHECK(seed.shape() == root.shape() && seed.dtype() == root.dtype() && seed.device() == root.device(),
               "backward: grad_output ", describe(seed), " for output ", describe(root));
  LeafGradHook* hook = t_leaf_hook;
  if (root.is_leaf()) {
    accumulate_leaf(*root.impl(), seed);
    if (hook) hook->on_ready_(*root.impl());
    return;
  }
  Node* top = root.grad_fn().get();
  NIMBUS_CHECK(top->backward, "backward: the graph through ", top->op,
               " was already used by an earlier backward() and its saved tensors freed");
  top->grad_out = seed;
  // Keep the graph alive while we walk it even if the caller drops `root`.
  std::shared_ptr<Node> keep = root.grad_fn();
  const std::vector<Node*> order = topological_order(top);
  // Every saved tensor as its op saw it, checked before any node runs: a refusal leaves every .grad
  // as it was.
  for (const Node* node : order)
    for (const SavedVersion& s : node->saved) {
      const std::shared_ptr<Storage> storage = s.storage.lock();
      NIMBUS_CHECK(!storage || storage->version == s.version, "backward: a tensor ", s.shape.str(), " that ",
                   node->op, " saved for its gradient was written in place after the forward pass (",
                   storage ? storage->version - s.version : 0, " write(s): copy_, fill_, add_inplace, an optimiser "
                   "step or load_state_dict); run the forward again, or write into a clone()");
    }
  // With a hook: how many edges of the walk still have to deliver into each leaf.
  std::unordered_map<TensorImpl*, int> pending;
  if (hook)
    for (Node* node : order)
      for (const Edge& e : node->edges)
        if (e.leaf) ++pending[e.leaf.get()];
  auto delivered = [&](const Node* node) {  // node's edges are done: announce leaves now complete
    if (!hook) return;
    for (const Edge& e : node->edges)
      if (e.leaf && --pending[e.leaf.get()] == 0 && e.leaf->grad) hook->on_ready_(*e.leaf);
  };
  for (Node* node : order) {
    if (!node->grad_out.defined()) {  // no gradient flowed here (e.g. unused branch)
      delivered(node);
      continue;
    }
    NIMBUS_CHECK(node->backward, "backward: the graph through ", node->op, " was already freed");
    GradSink sink(node->edges);
    node->backward(node->grad_out, sink);
    node->backward = nullptr;  // frees the saved activations now
    node->saved.clear();
    node->grad_out = Tensor();
    for (size_t i = 0; i < node->edges.size(); ++i) {
      const Edge& e = node->edges[i];
      Tensor& g = sink.grads()[i];
      if (!e.needed()) continue;
      NIMBUS_CHECK(g.defined(), "backward of ", node->op, " produced no gradient for input ", i);
      NIMBUS_CHECK(g.shape() == e.shape, "backward of ", node->op, " gave gradient ", describe(g), " for input ", i,
                   " of shape ", e.shape.str());
      if (e.fn) {
        // The first gradient may be shared (add passes gy to both inputs): sum into it only when
        // nothing else holds it, else into a fresh copy.
        if (!e.fn->grad_out.defined()) e.fn->grad_out = std::move(g);
        else if (sole_owner(e.fn->grad_out)) add_inplace(e.fn->grad_out, g);
        else {
          Tensor sum = e.fn->grad_out.clone();
          add_inplace(sum, g);
          e.fn->grad_out = sum;
        }
      } else {
        accumulate_leaf(*e.leaf, std::move(g));
      }
    }
    delivered(node);
  }
}

}  // namespace nimbus

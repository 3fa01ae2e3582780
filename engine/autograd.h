// autograd.h: reverse-mode automatic differentiation.
//
// During forward every op that has an input requiring grad records a Node on
// its output: the op's name, one Edge per input, and a backward closure written
// right next to the forward code (micrograd style). The closure captures what
// backward needs (detached tensors, so no reference cycles) and is destroyed
// as soon as backward has run it, which frees the saved activations early.
//
// backward(loss) sorts the Nodes reachable from loss topologically and runs
// them in reverse. Gradient rule (as in llm.c): gradients always ACCUMULATE.
// A node's incoming dL/dout is the sum over every consumer; a leaf's .grad is
// += across backward calls until zero_grad(). Inside a closure, write a fresh
// tensor per input with sink.set(i, g); the engine does the summing.
//
// NoGradGuard switches recording off (inference); nothing is saved then.
//
// An op names the tensors its closure saved from its inputs and output (record's `saved`), and the
// Node keeps their storage's write count (Storage::version). A backward whose saved tensor was written
// in place since (copy_, fill_, add_inplace, an optimiser step between forward and backward,
// load_state_dict) is an error naming the op, as in PyTorch, instead of a wrong gradient.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace nimbus {

// Where an input's gradient goes: into the Node that produced it, or into a
// leaf's .grad. Inputs that need no gradient have neither.
struct Edge {
  std::shared_ptr<Node> fn;
  std::shared_ptr<TensorImpl> leaf;
  Shape shape;  // the input's shape, to check what backward produced
  bool needed() const { return fn || leaf; }
};

// Handed to a backward closure: which inputs want a gradient, and where to put it.
class GradSink {
 public:
  explicit GradSink(const std::vector<Edge>& edges) : edges_(edges), grads_(edges.size()) {}
  bool needs(size_t i) const { return i < edges_.size() && edges_[i].needed(); }
  void set(size_t i, Tensor g) { grads_.at(i) = std::move(g); }
  std::vector<Tensor>& grads() { return grads_; }

 private:
  const std::vector<Edge>& edges_;
  std::vector<Tensor> grads_;
};

using BackwardFn = std::function<void(const Tensor& grad_out, GradSink& sink)>;

// What an op saved for backward, and how many writes its storage had then.
struct SavedVersion {
  std::weak_ptr<Storage> storage;  // the closure holds the tensor; weak: the Node does not extend it
  uint64_t version = 0;
  Shape shape;
};

struct Node {
  std::string op;            // e.g. "conv2d"; used in error messages
  std::vector<Edge> edges;   // one per op input, in the op's argument order
  BackwardFn backward;       // null once run (saved tensors freed)
  Tensor grad_out;           // dL/d(output), summed over consumers during backward
  std::vector<SavedVersion> saved;  // checked before backward runs
};

// Grad mode: on by default; NoGradGuard turns it off for its scope (per thread).
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when grad mode is on and one of the inputs requires grad: an op can
// skip saving anything for backward when this is false.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Attach a Node to `out` if any_requires_grad(inputs). Undefined inputs
// (e.g. an absent bias) are allowed and never get a gradient. `saved`: the tensors sharing storage
// with an input or the output that the closure reads (undefined ones are skipped); an op that saves
// none of those (only shapes, scalars or tensors of its own) leaves it empty.
void record(const char* op, const std::vector<Tensor>& inputs, Tensor& out, const std::vector<Tensor>& saved,
            BackwardFn backward);
inline void record(const char* op, const std::vector<Tensor>& inputs, Tensor& out, BackwardFn backward) {
  record(op, inputs, out, {}, std::move(backward));
}

// The reverse walk; Tensor::backward() calls this.
void run_backward(const Tensor& root, const Tensor& grad_output);

// While one is alive on this thread, backward calls it for each leaf as soon as the leaf's gradient
// is complete for this backward (every node that feeds it has run), in the order backward finishes
// them, and only for leaves that received a gradient. Data-parallel training starts each gradient's
// all-reduce there while the rest of backward runs (engine/distributed/gradient_reducer.h).
class LeafGradHook {
 public:
  explicit LeafGradHook(std::function<void(TensorImpl& leaf)> on_ready);
  ~LeafGradHook();
  LeafGradHook(const LeafGradHook&) = delete;
  LeafGradHook& operator=(const LeafGradHook&) = delete;

 private:
  std::function<void(TensorImpl& leaf)> on_ready_;
  LeafGradHook* prev_;
  friend void run_backward(const Tensor& root, const Tensor& grad_output);
};

}  // namespace nimbus

// test_optim.cpp: SGD / Adam against torch.optim, Nadam against a float64
// transcription of Keras 2.x, LR schedules, and optimiser state round trips.
// Fixture: tests/fixtures/optim.safetensors from tests/torch/gen_fixtures_optim.py.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <memory>

#include "engine/io/safetensors.h"
#include "engine/optim/adam.h"
#include "engine/optim/lr_schedule.h"
#include "engine/optim/nadam.h"
#include "engine/optim/sgd.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {

const SafetensorsFile& fx() { return fixture_file("optim.safetensors"); }

// g = a * (p - c) + 0.1 * p^3, the script's fixed problem, in float32.
Tensor problem_grad(const Tensor& p, const std::string& which) {
  std::vector<float> pv = p.to_vector(), a = fx().at("a_" + which).to_vector(), c = fx().at("c_" + which).to_vector();
  std::vector<float> g(pv.size());
  for (size_t i = 0; i < g.size(); ++i) g[i] = a[i] * (pv[i] - c[i]) + 0.1f * (pv[i] * pv[i] * pv[i]);
  return Tensor::from_vector(p.shape(), g);
}

struct Setup {
  std::string name;
  std::function<std::unique_ptr<Optimizer>(const NamedTensors&)> make;
  double lr_after5 = -1;  // set at step 6 when >= 0
  int skip_b_at = -1;     // 0-based step at which b has no gradient
  std::vector<std::string> slots;
};

std::vector<Setup> setups() {
  return {
      {"sgd", [](auto& p) { return std::make_unique<SGD>(p, SGDOptions{.lr = 0.1}); }, -1, -1, {}},
      {"sgd_momentum_wd",
       [](auto& p) { return std::make_unique<SGD>(p, SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01}); },
       -1,
       -1,
       {"momentum_buffer"}},
      {"sgd_nesterov",
       [](auto& p) { return std::make_unique<SGD>(p, SGDOptions{.lr = 0.05, .momentum = 0.9, .nesterov = true}); },
       -1,
       -1,
       {"momentum_buffer"}},
      {"sgd_dampening",
       [](auto& p) { return std::make_unique<SGD>(p, SGDOptions{.lr = 0.05, .momentum = 0.9, .dampening = 0.3}); },
       0.02,
       3,
       {"momentum_buffer"}},
      {"adam",
       [](auto& p) { return std::make_unique<Adam>(p, AdamOptions{.lr = 0.01}); },
       -1,
       -1,
       {"exp_avg", "exp_avg_sq", "step"}},
      {"adam_wd",
       [](auto& p) {
         return std::make_unique<Adam>(
             p, AdamOptions{.lr = 0.02, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .weight_decay = 0.1});
       },
       0.01,
       3,
       {"exp_avg", "exp_avg_sq", "step"}},
      {"adamw",
       [](auto& p) {
         return std::make_unique<Adam>(p, AdamOptions{.lr = 0.02,
                                                      .beta1 = 0.8,
                                                      .beta2 = 0.99,
                                                      .eps = 1e-6,
                                                      .weight_decay = 0.1,
                                                      .decoupled_weight_decay = true});
       },
       0.01,
       3,
       {"exp_avg", "exp_avg_sq", "step"}},
      {"nadam", [](auto& p) { return std::make_unique<Nadam>(p, NadamOptions{.lr = 0.01}); }, -1, -1, {"m", "v"}},
  };
}

struct Params {
  Tensor w = fx().at("w0").clone().set_requires_grad(true);
  Tensor b = fx().at("b0").clone().set_requires_grad(true);
  NamedTensors named() const { return {{"w", w}, {"b", b}}; }
};

void one_step(Optimizer& opt, Params& ps, const Setup& s, int k) {
  if (k == 5 && s.lr_after5 >= 0) opt.set_lr(s.lr_after5);
  opt.zero_grad();
  ps.w.set_grad(problem_grad(ps.w, "w"));
  if (k != s.skip_b_at) ps.b.set_grad(problem_grad(ps.b, "b"));
  opt.step();
}

}  // namespace

TEST_CASE("optim: SGD, Adam, AdamW match torch.optim and Nadam matches Keras-2 over 10 steps") {
  for (const Setup& s : setups()) {
    CAPTURE(s.name);
    Params ps;
    auto opt = s.make(ps.named());
    for (int k = 0; k < 10; ++k) {
      one_step(*opt, ps, s, k);
      std::string at = s.name + ".step" + std::to_string(k + 1);
      // rtol 1e-6; atol 3e-7 (a few float32 ulps at |p| ~ 1) for entries crossing zero,
      // where FMA contraction vs torch's kernels legitimately differ by ~1e-7.
      check_close(ps.w, fx().at(at + ".w"), 3e-7, 1e-6, at + ".w");
      check_close(ps.b, fx().at(at + ".b"), 3e-7, 1e-6, at + ".b");
    }
    // Optimiser state after 10 steps, as the reference holds it.
    OptimizerState st = opt->state_dict();
    for (std::string p : {"w", "b"})
      for (const std::string& slot : s.slots) {
        std::string key = s.name + ".state." + p + "." + slot;
        const Tensor* got = nullptr;
        for (auto& [n, t] : st.tensors)
          if (n == p + "." + slot) got = &t;
        REQUIRE_MESSAGE(got, "no state ", p, ".", slot);
        check_close(*got, fx().at(key), 1e-9, 1e-6, key);
      }
    if (s.name == "nadam") {
      auto* nadam = dynamic_cast<Nadam*>(opt.get());
      CHECK(nadam->m_schedule() == doctest::Approx(fx().at("nadam.state.m_schedule").item()).epsilon(1e-6).scale(0));
    }
  }
}

TEST_CASE("optim: the test detects a wrong update (fixture configs differ from each other)") {
  // Guards the test above against vacuous agreement: the trajectories must differ.
  auto w = [](const std::string& n) { return fx().at(n + ".step10.w").to_vector(); };
  for (const char* a : {"sgd", "sgd_momentum_wd", "sgd_nesterov", "sgd_dampening", "adam", "adam_wd", "adamw", "nadam"})
    CHECK(all_finite(w(a)));  // differing by NaN would not count
  for (const char* a : {"sgd", "sgd_momentum_wd", "sgd_nesterov", "sgd_dampening", "adam", "adam_wd", "adamw", "nadam"})
    for (const char* b : {"sgd", "sgd_momentum_wd", "sgd_nesterov", "sgd_dampening", "adam", "adam_wd", "adamw", "nadam"})
      if (std::string(a) != b) CHECK(worst_violation(w(a), w(b), 1e-5, 1e-5) > 0);
  CHECK(worst_violation(w("adam"), fx().at("w0").to_vector(), 1e-3, 0) > 0);  // parameters did move
}

TEST_CASE("optim: state_dict round trip continues the exact trajectory") {
  for (const Setup& s : setups()) {
    CAPTURE(s.name);
    Params a, b;
    auto oa = s.make(a.named());
    for (int k = 0; k < 6; ++k) one_step(*oa, a, s, k);
    // A fresh optimiser over copies of the parameters, loaded from the state.
    b.w.copy_(a.w);
    b.b.copy_(a.b);
    auto ob = s.make(b.named());
    ob->load_state_dict(oa->state_dict());
    CHECK(ob->steps() == 6);
    CHECK(ob->lr() == oa->lr());
    for (int k = 6; k < 10; ++k) {
      one_step(*oa, a, s, k);
      one_step(*ob, b, s, k);
    }
    CHECK(a.w.to_vector() == b.w.to_vector());  // bit-identical
    CHECK(a.b.to_vector() == b.b.to_vector());
  }
}

TEST_CASE("optim: load_state_dict lists every problem and changes nothing on error") {
  Params ps;
  Adam adam(ps.named(), {.lr = 0.01});
  one_step(adam, ps, setups()[4], 0);
  OptimizerState st = adam.state_dict();
  for (auto& [n, t] : st.tensors) {
    if (n == "w.exp_avg") t = Tensor::zeros({4, 3});
    if (n == "b.exp_avg") t = t.to(DType::BF16);  // a slot in another dtype: it failed only at the next step
  }
  st.tensors.erase(
      std::remove_if(st.tensors.begin(), st.tensors.end(), [](auto& nt) { return nt.first == "b.exp_avg_sq"; }),
      st.tensors.end());
  st.tensors.emplace_back("bogus", Tensor::zeros({1}));
  st.info["lr"] = "0.5";
  std::vector<float> before = adam.state_dict().tensors.back().second.to_vector();
  try {
    adam.load_state_dict(st);
    FAIL("no error");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find("w.exp_avg has shape (4,3), expected (3,4)") != std::string::npos);
    CHECK(m.find("missing b.exp_avg_sq") != std::string::npos);
    CHECK(m.find("b.exp_avg is bfloat16, expected float32") != std::string::npos);
    CHECK(m.find("unexpected bogus") != std::string::npos);
  }
  CHECK(adam.lr() == 0.01);
  CHECK(adam.state_dict().tensors.back().second.to_vector() == before);

  OptimizerState sgd_state;
  sgd_state.info["type"] = "sgd";
  CHECK_THROWS_WITH_AS(adam.load_state_dict(sgd_state), doctest::Contains("saved by sgd, loading into adam"), Error);
  // AdamW's state (the same slots) is another optimiser's: its decay would change on resume.
  Params pw;
  Adam adamw(pw.named(), {.lr = 0.01, .weight_decay = 0.1, .decoupled_weight_decay = true});
  CHECK(std::string(adamw.type()) == "adamw");
  CHECK_THROWS_WITH_AS(adamw.load_state_dict(adam.state_dict()), doctest::Contains("saved by adam, loading into adamw"),
                       Error);
}

TEST_CASE("optim: parameters without a gradient are skipped, bad configuration is an Error") {
  Params ps;
  SGD sgd(ps.named(), {.lr = 0.1, .momentum = 0.9});
  std::vector<float> w0 = ps.w.to_vector();
  sgd.step();  // no gradients at all
  CHECK(ps.w.to_vector() == w0);
  CHECK(sgd.state_dict().tensors.size() == 1);  // just "step"
  CHECK_THROWS_AS(SGD(ps.named(), {.lr = 0.1, .nesterov = true}), Error);
  CHECK_THROWS_AS(Adam(ps.named(), {.beta1 = 1.0}), Error);
  CHECK_THROWS_AS(Adam({{"w", ps.w}, {"w", ps.b}}, {}), Error);   // duplicate name
  CHECK_THROWS_AS(Adam({{"w", ps.w}, {"w2", ps.w}}, {}), Error);  // same tensor twice
  CHECK_THROWS_AS(Adam({{"x", Tensor::zeros({2})}}, {}), Error);  // not trainable
  CHECK_THROWS_AS(sgd.set_lr(-1), Error);
}

// set_grad refuses a gradient of another dtype than its tensor's, so the optimiser meets bfloat16 as a
// parameter of that dtype (a model cast whole), which it cannot update in float32 moments.
TEST_CASE("optim: a bfloat16 parameter is refused before any count advances, so the next step is a first step") {
  for (const std::string kind : {"adam", "nadam"}) {
    CAPTURE(kind);
    auto make = [&](const NamedTensors& p) -> std::unique_ptr<Optimizer> {
      if (kind == "adam") return std::make_unique<Adam>(p, AdamOptions{.lr = 1e-3});
      return std::make_unique<Nadam>(p, NadamOptions{.lr = 1e-3});
    };
    Params ps, fresh;
    Tensor c = Tensor::zeros({3}).to(DType::BF16);
    c.set_requires_grad(true);
    NamedTensors with_c = ps.named();
    with_c.emplace_back("c", c);  // the third parameter: after w and b were staged
    auto opt = make(with_c), ref = make(fresh.named());
    ps.w.set_grad(problem_grad(ps.w, "w"));
    ps.b.set_grad(problem_grad(ps.b, "b"));
    c.set_grad(Tensor::ones({3}).to(DType::BF16));
    CHECK_THROWS_WITH_AS(opt->step(), doctest::Contains("parameter 'c' is"), Error);
    CHECK(ps.w.to_vector() == fresh.w.to_vector());  // nothing applied
    CHECK(ps.b.to_vector() == fresh.b.to_vector());
    c.set_grad(Tensor());  // no gradient: skipped from here
    // Refused whole: the same step again is a first step, as a fresh optimiser's.
    for (Params* q : {&ps, &fresh}) {
      q->w.set_grad(problem_grad(q->w, "w"));
      q->b.set_grad(problem_grad(q->b, "b"));
    }
    opt->step();
    ref->step();
    CHECK(ps.w.to_vector() == fresh.w.to_vector());
    CHECK(ps.b.to_vector() == fresh.b.to_vector());
  }
}

TEST_CASE("lr_schedule: constant, step at milestones (divide by 5), cosine") {
  ConstantLr c(7e-5);
  CHECK(c.lr_at(0) == 7e-5);
  CHECK(c.lr_at(1000) == 7e-5);
  StepLr s(1e-3, {50, 100, 200, 250}, 5);
  struct {
    int epoch;
    double lr;
  } want[] = {{0, 1e-3},   {49, 1e-3},  {50, 2e-4},  {99, 2e-4},    {100, 4e-5},
              {199, 4e-5}, {200, 8e-6}, {249, 8e-6}, {250, 1.6e-6}, {400, 1.6e-6}};
  for (auto [e, lr] : want) {
    CAPTURE(e);
    CHECK(s.lr_at(e) == doctest::Approx(lr).epsilon(1e-14).scale(0));
  }
  CosineLr cos(0.1, 10, 0.001);
  CHECK(cos.lr_at(0) == doctest::Approx(0.1).epsilon(1e-14));
  CHECK(cos.lr_at(5) == doctest::Approx(0.0505).epsilon(1e-14));
  CHECK(cos.lr_at(10) == doctest::Approx(0.001).epsilon(1e-14).scale(0));
  CHECK(cos.lr_at(3) == doctest::Approx(0.001 + 0.099 * (1 + std::cos(M_PI * 0.3)) / 2).epsilon(1e-14));
  CHECK_THROWS_AS(s.lr_at(-1), Error);
  CHECK_THROWS_AS(StepLr(1e-3, {100, 50}, 5), Error);
}

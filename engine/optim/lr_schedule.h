// lr_schedule.h: learning rate as a function of the epoch (0-based), set on an
// optimiser at the start of each epoch: `opt.set_lr(schedule.lr_at(epoch))`.
// Being a pure function of the epoch, a resumed run gets the same rates.
//
//   ConstantLr(lr)                               DSen2-CR (Nadam 7e-5, no decay)
//   StepLr(base, {50, 100, 200, 250}, 5)         divide by 5 at each milestone:
//       lr(e) = base / divisor^k, k = milestones <= e   (PyTorch MultiStepLR with gamma = 1/divisor)
//       so epochs 0..49 use base and epoch 50 is the first at base/5.
//   CosineLr(base, total, min)                   lr(e) = min + (base - min) * (1 + cos(pi * e / total)) / 2
//       for e <= total (PyTorch CosineAnnealingLR's closed form, T_max = total), then min: held
//       there, where PyTorch's formula would climb back up the cosine (0.0505 at e = 1.5 total).
#pragma once
#include <memory>
#include <vector>

namespace nimbus {

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  virtual double lr_at(int epoch) const = 0;
};

class ConstantLr : public LrSchedule {
 public:
  explicit ConstantLr(double lr);
  double lr_at(int epoch) const override;

 private:
  double lr_;
};

class StepLr : public LrSchedule {
 public:
  StepLr(double base, std::vector<int> milestones, double divisor);
  double lr_at(int epoch) const override;

 private:
  double base_, divisor_;
  std::vector<int> milestones_;
};

class CosineLr : public LrSchedule {
 public:
  CosineLr(double base, int total_epochs, double min_lr = 0);
  double lr_at(int epoch) const override;

 private:
  double base_, min_;
  int total_;
};

}  // namespace nimbus

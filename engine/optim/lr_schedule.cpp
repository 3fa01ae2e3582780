// lr_schedule.cpp: the schedules of lr_schedule.h (closed forms, no state).
#include "engine/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "kernels/common/error.h"

namespace nimbus {

namespace {
void check_lr(double lr, const char* who) {
  NIMBUS_CHECK(std::isfinite(lr) && lr >= 0, who, ": learning rate must be finite and >= 0, got ", lr);
}
void check_epoch(int epoch, const char* who) { NIMBUS_CHECK(epoch >= 0, who, ": negative epoch ", epoch); }
}  // namespace

ConstantLr::ConstantLr(double lr) : lr_(lr) { check_lr(lr, "ConstantLr"); }

double ConstantLr::lr_at(int epoch) const {
  check_epoch(epoch, "ConstantLr");
  return lr_;
}

StepLr::StepLr(double base, std::vector<int> milestones, double divisor)
    : base_(base), divisor_(divisor), milestones_(std::move(milestones)) {
  check_lr(base, "StepLr");
  NIMBUS_CHECK(std::isfinite(divisor) && divisor > 0, "StepLr: divisor must be > 0, got ", divisor);
  NIMBUS_CHECK(std::is_sorted(milestones_.begin(), milestones_.end()), "StepLr: milestones must be increasing");
}

double StepLr::lr_at(int epoch) const {
  check_epoch(epoch, "StepLr");
  auto k = std::upper_bound(milestones_.begin(), milestones_.end(), epoch) - milestones_.begin();
  return base_ / std::pow(divisor_, double(k));
}

CosineLr::CosineLr(double base, int total_epochs, double min_lr) : base_(base), min_(min_lr), total_(total_epochs) {
  check_lr(base, "CosineLr");
  check_lr(min_lr, "CosineLr");
  NIMBUS_CHECK(total_epochs > 0, "CosineLr: total_epochs must be > 0, got ", total_epochs);
}

double CosineLr::lr_at(int epoch) const {
  check_epoch(epoch, "CosineLr");
  if (epoch >= total_) return min_;
  return min_ + (base_ - min_) * (1 + std::cos(M_PI * double(epoch) / double(total_))) / 2;
}

}  // namespace nimbus

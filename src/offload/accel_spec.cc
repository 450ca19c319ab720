// The accelerator named by a user's spec (qzfs mount -o accel=, qzfs bench --accel).
#include <algorithm>
#include <stdexcept>

#include "qzfs/offload/accel_backend.h"
#include "qzfs/offload/device.h"

namespace qzfs::offload {

void check_accel_spec(const std::string& spec, std::string_view option) {
  if (spec.rfind("fault:", 0) == 0) {
    (void)parse_fault_spec(spec.substr(6));  // throws naming the bad key or value
  } else if (spec.rfind("fault-qat:", 0) == 0) {
    (void)parse_fault_spec(spec.substr(10));
  } else if (spec.rfind("model:", 0) == 0) {
    (void)parse_model_spec(spec.substr(6));
  } else if (spec != "cpu" && spec != "qat" && spec != "auto" && spec != "model") {
    throw std::invalid_argument(std::string(option) +
                                " must be cpu, qat, auto, fault:SPEC, fault-qat:SPEC, model or model:SPEC, not '" + spec +
                                "'");
  }
}

std::unique_ptr<accel_backend> make_accel(const std::string& spec, const std::string& qatzip_lib,
                                          std::size_t max_record, const std::string& verify) {
  check_accel_spec(spec, "accel");
  std::unique_ptr<device> dev;
  if (spec == "qat" || spec == "auto") {
    dev = make_qat_device({.library = qatzip_lib});
  } else if (spec.rfind("fault:", 0) == 0) {
    dev = std::make_unique<fault_device>(make_software_device(max_record), parse_fault_spec(spec.substr(6)));
  } else if (spec.rfind("fault-qat:", 0) == 0) {  // faults injected in front of the real QAT path
    dev = std::make_unique<fault_device>(make_qat_device({.library = qatzip_lib}), parse_fault_spec(spec.substr(10)));
  }
  accel_backend::options ao;
  if (spec == "model" || spec.rfind("model:", 0) == 0) {
    // A modelled card (docs/QAT.md); one backend session per instance, so every instance can be
    // busy at once (a session waits for its job).
    const auto ms = parse_model_spec(spec == "model" ? std::string_view{} : std::string_view(spec).substr(6));
    dev = std::make_unique<model_device>(ms.model, std::min<std::size_t>(max_record, 128 * 1024));
    if (ms.has_faults) dev = std::make_unique<fault_device>(std::move(dev), ms.faults);
    ao.sessions = ms.model.instances;
  }
  if (!dev) return nullptr;  // "cpu"
  ao.max_record = std::min<std::size_t>(max_record, 128 * 1024);
  if (verify == "crc") ao.verify = accel_backend::verify_mode::crc;
  else if (verify != "full") throw std::invalid_argument("accel verify must be full or crc");
  return std::make_unique<accel_backend>(std::move(dev), ao);
}

}  // namespace qzfs::offload

#include "host/model_backend.h"

#include "host/plugin_instance.h"

namespace cg {

std::string_view ModelBackend::name() const { return instance_.name(); }

int ModelBackend::generate(const cg_model_request_t &req, const cg_model_sink_t &sink,
                           uint64_t *call_id, std::string *why) {
  const int rc = instance_.model_ops()->generate(instance_.state(), &req, &sink, call_id);
  if (rc != 0) *why = instance_.take_error();
  return rc;
}

int ModelBackend::cancel(uint64_t call_id) {
  return instance_.model_ops()->cancel(instance_.state(), call_id);
}

}  // namespace cg

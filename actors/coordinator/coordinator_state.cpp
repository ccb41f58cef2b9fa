#include "actors/coordinator/coordinator_state.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace longcat::coordinator {

// -- expert lists ------------------------------------------------------------------------------

std::vector<int32_t> parse_expert_list(const std::string& text) {
    // Ids are bounded before a range is expanded: "0-2000000000" would otherwise allocate
    // gigabytes before any check against the model's expert count.
    constexpr int32_t kMaxExpertId = 65535;  // model_config's bound on routed + zero experts
    const auto bad = [&](const std::string& why) {
        return std::invalid_argument("bad expert list \"" + text + "\" (" + why +
                                     "; expected e.g. 0-3,7)");
    };
    const auto number = [&](const std::string& digits) {
        int64_t value = 0;
        const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
        if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size())
            throw bad("\"" + digits + "\" is not an expert id");
        if (value < 0 || value > kMaxExpertId)
            throw bad("expert id " + digits + " outside 0.." + std::to_string(kMaxExpertId));
        return static_cast<int32_t>(value);
    };
    std::vector<int32_t> out;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
        if (item.empty()) continue;
        const auto dash = item.find('-');
        if (dash == std::string::npos) {
            out.push_back(number(item));
        } else {
            const int32_t first = number(item.substr(0, dash));
            const int32_t last = number(item.substr(dash + 1));
            if (last < first) throw bad("range " + item + " runs backwards");
            for (int32_t expert_idx = first; expert_idx <= last; ++expert_idx)
                out.push_back(expert_idx);
        }
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

std::string format_expert_list(const std::vector<int32_t>& experts) {
    std::vector<int32_t> sorted = experts;
    std::sort(sorted.begin(), sorted.end());
    std::string out;
    for (size_t idx = 0; idx < sorted.size();) {
        size_t end = idx;
        while (end + 1 < sorted.size() && sorted[end + 1] == sorted[end] + 1) ++end;
        if (!out.empty()) out += ",";
        out += std::to_string(sorted[idx]);
        if (end > idx) out += "-" + std::to_string(sorted[end]);
        idx = end + 1;
    }
    return out.empty() ? "none" : out;
}

std::map<std::string, std::vector<int32_t>> parse_placement_spec(const std::string& text) {
    std::map<std::string, std::vector<int32_t>> out;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ';')) {
        if (item.empty()) continue;
        const auto eq = item.find('=');
        if (eq == std::string::npos || eq == 0)
            throw std::invalid_argument("bad placement entry \"" + item + "\" (expected GROUP=0-3)");
        out[item.substr(0, eq)] = parse_expert_list(item.substr(eq + 1));
    }
    return out;
}

// -- step_batch ------------------------------------------------------------------------------

bool step_batch::empty() const {
    for (const auto& [worker_id, plan] : plans)
        if (!plan.sequences.empty() || !plan.transfers.empty() || !plan.imports.empty() || !plan.expects.empty())
            return false;
    return true;
}

// -- coordinator_state -----------------------------------------------------------------------

coordinator_state::coordinator_state(coordinator_config config, int32_t num_layers,
                                     int32_t num_routed_experts, int64_t eos_token_id)
    : config_(std::move(config)),
      num_layers_(num_layers),
      num_routed_experts_(num_routed_experts),
      eos_token_id_(eos_token_id) {
    hello_ = proto::make_hello(proto::node_role::coordinator, config_.name, "");
    spec_ = parse_placement_spec(config_.expert_placement);
    for (const auto& [group, experts] : spec_)
        for (int32_t expert_idx : experts)
            if (expert_idx < 0 || expert_idx >= num_routed_experts_)
                throw std::invalid_argument("expert-placement: group " + group + " names expert " +
                                            std::to_string(expert_idx) + ", the model has " +
                                            std::to_string(num_routed_experts_) + " routed experts");
    map_.num_layers = num_layers_;
    map_.num_routed_experts = num_routed_experts_;
}

int32_t steps_in_flight(int32_t pipeline_depth, int64_t short_step_us, double step_seconds) {
    const bool short_steps = short_step_us > 0 && step_seconds > 0.0 &&
                             step_seconds * 1e6 < static_cast<double>(short_step_us);
    return pipeline_depth >= 2 && short_steps ? pipeline_depth + 1 : pipeline_depth;
}

std::set<int32_t> coordinator_state::unplaced_experts(const std::string& pool) const {
    std::set<int32_t> unplaced;
    for (int32_t expert_idx = 0; expert_idx < num_routed_experts_; ++expert_idx) unplaced.insert(expert_idx);
    for (const auto& [id, m] : members_)
        if (!m.is_worker() && m.pool == pool && !m.experts_by_layer.empty())
            for (int32_t expert_idx : m.experts_by_layer[0]) unplaced.erase(expert_idx);
    return unplaced;
}

bool coordinator_state::pooled() const {
    for (const auto& [id, m] : members_)
        if (!m.is_worker() && !m.pool.empty()) return true;  // registration keeps it all or none
    return false;
}

std::string coordinator_state::lane_of(const member_record& member) const {
    if (!member.is_worker()) return member.pool;
    if (!pooled()) return "";
    return member.is_prefill() ? "prefill" : "decode";
}

std::vector<std::string> coordinator_state::lanes() const {
    std::set<std::string> out;
    for (const member_record* w : ready_workers()) out.insert(lane_of(*w));
    return {out.begin(), out.end()};
}

std::set<std::string> coordinator_state::needed_pools() const {
    if (!pooled()) return {""};
    std::set<std::string> out;
    for (const auto& [id, m] : members_)
        if (!m.is_worker() || m.ready) out.insert(lane_of(m));
    return out;
}

std::string coordinator_state::unplaced_reason() const {
    std::string out;
    for (const std::string& pool : needed_pools()) {
        const std::set<int32_t> unplaced = unplaced_experts(pool);
        if (unplaced.empty()) continue;
        out += (out.empty() ? "waiting for expert groups: " : "; ") + std::string("experts ") +
               format_expert_list({unplaced.begin(), unplaced.end()}) + " have no replica" +
               (pool.empty() ? "" : " in the " + pool + " pool");
    }
    return out;
}

proto::placement_map coordinator_state::placement_for(uint64_t member_id) const {
    const member_record* m = member(member_id);
    if (!m || !pooled()) return map_;
    const std::string lane = lane_of(*m);
    proto::placement_map view = map_;
    view.groups.clear();
    view.workers.clear();
    for (const auto& group : map_.groups)
        if (group.pool == lane) view.groups.push_back(group);
    for (const auto& worker : map_.workers)
        if (worker.pool == lane) view.workers.push_back(worker);
    return view;
}

std::vector<std::vector<int32_t>> coordinator_state::assignment_for(const std::string& group,
                                                                    const std::string& pool) const {
    std::vector<int32_t> experts;
    const std::set<int32_t> unplaced = unplaced_experts(pool);
    if (auto it = spec_.find(group); it != spec_.end()) {
        experts = it->second;
    } else if (spec_.empty()) {
        // Even split: the first chunk none of whose experts a live group holds.
        const int32_t num_groups = config_.expected_expert_groups;
        for (int32_t chunk = 0; chunk < num_groups && experts.empty(); ++chunk) {
            const int32_t begin = chunk * num_routed_experts_ / num_groups;
            const int32_t end = (chunk + 1) * num_routed_experts_ / num_groups;
            bool all_free = true;
            for (int32_t expert_idx = begin; expert_idx < end; ++expert_idx)
                all_free = all_free && unplaced.count(expert_idx) != 0;
            if (all_free)
                for (int32_t expert_idx = begin; expert_idx < end; ++expert_idx) experts.push_back(expert_idx);
        }
    }
    if (experts.empty()) experts.assign(unplaced.begin(), unplaced.end());  // orphans, if any
    return std::vector<std::vector<int32_t>>(static_cast<size_t>(num_layers_), experts);
}

proto::register_reply coordinator_state::register_member(const proto::register_member& message) {
    proto::register_reply reply;
    reply.coordinator = hello_;
    if (auto mismatch = proto::check_hello(hello_, message.greeting)) {
        reply.error = "registration refused: " + *mismatch;
        return reply;
    }
    const proto::node_role role = message.greeting.role;
    if (role == proto::node_role::coordinator || role == proto::node_role::gateway) {
        reply.error = "registration refused: " + message.greeting.name + " has role " +
                      std::string(proto::to_string(role)) + ", not a cluster member";
        return reply;
    }
    for (const auto& [id, m] : members_)
        if (m.greeting.name == message.greeting.name) {
            reply.error = "registration refused: a live member is already named " + m.greeting.name;
            return reply;
        }
    if (message.tp_size < 1 || message.tp_rank < 0 || message.tp_rank >= message.tp_size) {
        reply.error = "registration refused: " + message.greeting.name + " has TP rank " +
                      std::to_string(message.tp_rank) + " of " + std::to_string(message.tp_size);
        return reply;
    }
    member_record record;
    record.id = next_member_id_++;
    record.greeting = message.greeting;
    record.tp_group = message.tp_group;
    record.tp_rank = message.tp_rank;
    record.tp_size = message.tp_size;
    if (message.kv_pages < 0 || message.kv_page_size < 0 ||
        (message.kv_pages > 0) != (message.kv_page_size > 0)) {
        reply.error = "registration refused: " + message.greeting.name + " announces " +
                      std::to_string(message.kv_pages) + " KV pages of " +
                      std::to_string(message.kv_page_size) + " tokens";
        return reply;
    }
    record.kv_pages = message.kv_pages;
    record.kv_page_size = message.kv_page_size;
    if (!record.is_worker()) {
        if (!message.pool.empty() && message.pool != "prefill" && message.pool != "decode") {
            reply.error = "registration refused: " + message.greeting.name + " names pool \"" +
                          message.pool + "\" (expected \"\", \"prefill\" or \"decode\")";
            return reply;
        }
        for (const auto& [id, m] : members_)
            if (!m.is_worker() && m.pool.empty() != message.pool.empty()) {
                reply.error = "registration refused: " + message.greeting.name + " is in pool \"" +
                              message.pool + "\" but " + m.greeting.name + " is in pool \"" + m.pool +
                              "\"; a cluster's expert groups are all shared (\"\") or all in pools";
                return reply;
            }
        record.pool = message.pool;
        record.experts_by_layer = assignment_for(record.greeting.name, record.pool);
        reply.experts_by_layer = record.experts_by_layer;
        down_groups_.erase(record.greeting.name);
    }
    reply.accepted = true;
    reply.member_id = record.id;
    members_[record.id] = record;
    membership_changed_ = true;
    return reply;
}

void coordinator_state::member_ready(uint64_t member_id) {
    if (auto it = members_.find(member_id); it != members_.end()) {
        it->second.ready = true;
        membership_changed_ = true;
    }
}

void coordinator_state::placement_acked(const proto::placement_ack& ack, uint64_t member_id) {
    if (auto it = members_.find(member_id); it != members_.end() && ack.error.empty())
        it->second.acked_version = std::max(it->second.acked_version, ack.version);
    bool all = map_.version != 0;
    for (const auto& [id, m] : members_) all = all && m.acked_version >= map_.version;
    if (all) placement_failures_ = 0;
}

std::vector<finished_request> coordinator_state::placement_failed(uint64_t member_id,
                                                                  const std::string& why) {
    const auto it = members_.find(member_id);
    const std::string name =
        it != members_.end() ? it->second.greeting.name : "member " + std::to_string(member_id);
    const std::string error =
        name + " could not apply placement v" + std::to_string(map_.version) + ": " + why;
    membership_changed_ = true;  // a map is sent again ...
    ++placement_failures_;       // ... after a back-off
    const auto backoff = std::chrono::milliseconds(
        std::min<int64_t>(10'000, int64_t{500} << std::min(placement_failures_ - 1, 5)));
    placement_retry_at_ = clock::now() + backoff;
    std::vector<finished_request> out;
    for (uint64_t request_id : std::vector<uint64_t>(running_.begin(), running_.end()))
        out.push_back(end_request(request_id, "error", error));
    return out;
}

std::vector<finished_request> coordinator_state::expire_deadlines() {
    const auto now = clock::now();
    std::vector<finished_request> out;
    for (uint64_t request_id : std::vector<uint64_t>(running_.begin(), running_.end()))
        if (requests_.at(request_id).deadline < now)
            out.push_back(
                end_request(request_id, "error",
                            "request " + std::to_string(request_id) + " missed its deadline",
                            proto::request_error::deadline));
    for (uint64_t request_id : std::vector<uint64_t>(queue_.begin(), queue_.end()))
        if (requests_.at(request_id).deadline < now)
            out.push_back(end_request(
                request_id, "error",
                "request " + std::to_string(request_id) + " missed its deadline while queued",
                proto::request_error::deadline));
    return out;
}

const member_record* coordinator_state::member(uint64_t member_id) const {
    auto it = members_.find(member_id);
    return it == members_.end() ? nullptr : &it->second;
}

std::vector<uint64_t> coordinator_state::member_ids() const {
    std::vector<uint64_t> ids;
    for (const auto& [id, m] : members_) ids.push_back(id);
    return ids;
}

std::string coordinator_state::describe_group(const member_record& group) const {
    if (group.experts_by_layer.empty()) return group.greeting.name + " (no experts)";
    return group.greeting.name + " (experts " + format_expert_list(group.experts_by_layer[0]) +
           " of every layer" + (group.pool.empty() ? "" : ", " + group.pool + " pool") + ")";
}

std::vector<finished_request> coordinator_state::member_down(uint64_t member_id) {
    auto it = members_.find(member_id);
    if (it == members_.end()) return {};
    const member_record record = it->second;
    members_.erase(it);
    membership_changed_ = true;
    std::string error;
    if (record.is_worker()) {
        error = "attention worker " + record.greeting.name + " (TP group " + record.tp_group +
                " rank " + std::to_string(record.tp_rank) + ") is down";
    } else {
        const bool holds_experts = !record.experts_by_layer.empty() && !record.experts_by_layer[0].empty();
        if (!holds_experts) return {};  // a spare group: no request needed it
        const std::string description = describe_group(record);
        down_groups_[record.greeting.name] = description;
        error = "expert group " + description + " is down";
    }
    release_by_worker_.erase(member_id);
    kv_release_by_worker_.erase(member_id);
    std::vector<finished_request> out;
    // Every running request needs every expert and every worker of the step (lockstep), and
    // queued ones would be refused now: all of them fail, naming the member.
    // Queued ones never ran: they are refused as the cluster is not serving.
    for (uint64_t request_id : std::vector<uint64_t>(running_.begin(), running_.end()))
        out.push_back(end_request(request_id, "error", error));
    for (uint64_t request_id : std::vector<uint64_t>(queue_.begin(), queue_.end()))
        out.push_back(end_request(request_id, "error", error, proto::request_error::not_serving));
    return out;
}

std::vector<const member_record*> coordinator_state::ready_workers() const {
    std::vector<const member_record*> out;
    for (const auto& [id, m] : members_)
        if (m.is_worker() && m.ready) out.push_back(&m);
    return out;
}

std::vector<const member_record*> coordinator_state::ready_workers(const std::string& lane) const {
    std::vector<const member_record*> out;
    for (const member_record* w : ready_workers())
        if (lane_of(*w) == lane) out.push_back(w);
    return out;
}

std::optional<proto::placement_map> coordinator_state::apply_placement() {
    if (!membership_changed_) return std::nullopt;
    // Running requests keep their KV caches across maps (workers swap only their pairings); the
    // actor calls this only between steps.
    for (const auto& [id, m] : members_)
        if (!m.ready) return std::nullopt;
    if (!unplaced_reason().empty()) return std::nullopt;
    if (static_cast<int32_t>(ready_workers().size()) < config_.expected_attention_workers)
        return std::nullopt;
    proto::placement_map next;
    next.version = map_.version + 1;
    next.num_layers = num_layers_;
    next.num_routed_experts = num_routed_experts_;
    for (const auto& [id, m] : members_) {
        if (m.is_worker()) {
            next.workers.push_back({m.greeting.name, m.greeting.data_plane_address, m.tp_group,
                                    m.tp_rank, m.tp_size, lane_of(m)});
        } else if (!m.experts_by_layer.empty() && !m.experts_by_layer[0].empty()) {
            next.groups.push_back(
                {m.greeting.name, m.greeting.data_plane_address, m.experts_by_layer, m.pool});
        }
    }
    map_ = next;
    membership_changed_ = false;
    return map_;
}

std::string coordinator_state::refusal_reason() const {
    const std::string unplaced = unplaced_reason();
    if (!unplaced.empty() && !down_groups_.empty()) {
        std::string out;
        for (const auto& [name, description] : down_groups_)
            out += (out.empty() ? "" : "; ") + ("expert group " + description + " is down");
        return out + "; requests are refused until it re-registers";
    }
    const size_t num_workers = ready_workers().size();
    if (static_cast<int32_t>(num_workers) < config_.expected_attention_workers)
        return "waiting for attention workers: " + std::to_string(num_workers) + " of " +
               std::to_string(config_.expected_attention_workers) + " ready";
    return unplaced;
}

std::string coordinator_state::not_serving_reason() const {
    if (std::string hard = refusal_reason(); !hard.empty()) return hard;
    for (const auto& [id, m] : members_)
        if (!m.ready) return "waiting for " + m.greeting.name + " to load its weights";
    if (membership_changed_ || map_.version == 0) return "placement update pending";
    for (const auto& [id, m] : members_)
        if (m.acked_version < map_.version)
            return "waiting for " + m.greeting.name + " to pair with placement v" +
                   std::to_string(map_.version);
    return "";
}

std::optional<refusal> coordinator_state::admit(uint64_t request_id,
                                                    const proto::generate_request& request) {
    using proto::request_error;
    if (draining_)
        return refusal{request_error::not_serving, "coordinator " + config_.name + " is stopping (draining)"};
    // Refused while something is missing; queued while members merely (re)pair with a new map.
    if (auto reason = refusal_reason(); !reason.empty())
        return refusal{request_error::not_serving, "not serving: " + reason};
    if (request.prompt.empty()) return refusal{request_error::invalid_request, "empty prompt"};
    if (request.max_tokens < 1) return refusal{request_error::invalid_request, "max_tokens must be >= 1"};
    // A request must fit, alone, in some worker's pool: else preempting others cannot help (and
    // at the head of the FIFO queue it would hold up every request behind it). With
    // prefill/decode disaggregation: prompt + max_tokens in a decode pool, and prompt + 1 (the
    // prefill and its first token) in a prefill pool.
    const int64_t prompt = static_cast<int64_t>(request.prompt.size());
    const bool pd = pd_mode();
    const auto check_fit = [&](bool prefill_role, int64_t tokens,
                               const std::string& what) -> std::optional<refusal> {
        const member_record* roomiest = nullptr;
        for (const member_record* w : ready_workers()) {
            if (pd && w->is_prefill() != prefill_role) continue;
            if (w->kv_pages == 0 || !roomiest ||
                (roomiest->kv_pages != 0 && w->kv_pages > roomiest->kv_pages))
                roomiest = w;
        }
        if (!roomiest || roomiest->kv_pages <= 0 ||
            pages_for(*roomiest, tokens) <= roomiest->kv_pages)
            return std::nullopt;
        return refusal{request_error::invalid_request,
                       "prompt (" + std::to_string(prompt) + " tokens) + " + what + " need " +
                           std::to_string(pages_for(*roomiest, tokens)) + " KV pages of " +
                           std::to_string(roomiest->kv_page_size) + " tokens; the largest " +
                           (pd ? (prefill_role ? "prefill " : "decode ") : "") +
                           "attention worker pool (" + roomiest->greeting.name + ") has " +
                           std::to_string(roomiest->kv_pages)};
    };
    if (auto no = check_fit(false, prompt + request.max_tokens,
                            "max_tokens (" + std::to_string(request.max_tokens) + ")"))
        return no;
    if (pd)
        if (auto no = check_fit(true, prompt + 1, "its first token")) return no;
    request_record record;
    record.id = request_id;
    record.request = request;
    record.prefill = request.prompt;
    const int64_t deadline_ms = request.deadline_ms > 0 ? request.deadline_ms : config_.request_deadline_ms;
    record.deadline = clock::now() + std::chrono::milliseconds(deadline_ms);
    requests_[request_id] = std::move(record);
    queue_.push_back(request_id);
    return std::nullopt;
}

bool coordinator_state::cancel(uint64_t request_id) {
    if (requests_.count(request_id) == 0) return false;
    finished_.push_back(end_request(request_id, "cancelled", ""));
    return true;
}

const request_record* coordinator_state::request(uint64_t request_id) const {
    auto it = requests_.find(request_id);
    return it == requests_.end() ? nullptr : &it->second;
}

int64_t coordinator_state::pages_for(const member_record& worker, int64_t tokens) const {
    if (worker.kv_page_size <= 0) return 0;
    return (tokens + worker.kv_page_size - 1) / worker.kv_page_size;
}

// Tokens the request runs in the next step: its decode token, or its next prefill chunk.
int64_t coordinator_state::next_step_tokens(const request_record& record) const {
    if (record.planned_prefill_done() >= record.prefill.size()) return 1;
    const auto left = static_cast<int64_t>(record.prefill.size() - record.planned_prefill_done());
    return config_.prefill_chunk > 0 ? std::min(left, config_.prefill_chunk) : left;
}

bool coordinator_state::schedulable(const request_record& record) const {
    // A request on a prefill worker runs prefill chunks only; it decodes after its KV moved.
    if (record.on_prefill && record.planned_prefill_done() >= record.prefill.size()) return false;
    return record.planned_generated() < record.request.max_tokens;
}

bool coordinator_state::pd_mode() const {
    bool prefill = false, decode = false;
    for (const member_record* w : ready_workers()) (w->is_prefill() ? prefill : decode) = true;
    return prefill && decode;
}

// The pages a running request holds once its next step (if it gets one) is done.
int64_t coordinator_state::reservation(const member_record& worker, const request_record& record) const {
    return pages_for(worker, record.planned_cached() + (schedulable(record) ? next_step_tokens(record) : 0));
}

int64_t coordinator_state::reserved_pages(uint64_t member_id) const {
    auto worker = members_.find(member_id);
    if (worker == members_.end()) return 0;
    int64_t pages = 0;
    for (uint64_t request_id : running_) {
        const request_record& record = requests_.at(request_id);
        // A prefill worker frees a request's pages when it sends its KV.
        if (record.worker_id == member_id)
            pages += record.stream_last_planned ? 0 : reservation(worker->second, record);
        // Disaggregation: the decode pages are reserved when the prefill starts.
        else if (record.on_prefill && record.decode_worker == member_id)
            pages += pages_for(worker->second, static_cast<int64_t>(record.prefill.size()) + 1);
    }
    return pages;
}

void coordinator_state::preempt(uint64_t request_id) { requeue(request_id, true); }

// A request that ends or is requeued while its KV transfer is under way (pages reserved on the
// decode worker, frames sent or coming, or its import in flight or just failed): the decode
// worker drops that attempt — pages, queued frames, and frames that arrive later (its sink
// remembers released attempts, so this need not wait for the sending step).
void coordinator_state::release_transfer(const request_record& record) {
    uint64_t decode = 0;
    if (record.on_prefill && (record.expect_planned || record.stream_step != 0)) decode = record.decode_worker;
    else if (!record.on_prefill && record.import_step != 0) decode = record.worker_id;
    if (decode != 0 && members_.count(decode) != 0)
        kv_release_by_worker_[decode].push_back({record.id, record.epoch});
}

bool coordinator_state::kv_sent(const request_record& record) const {
    return record.on_prefill && record.stream_last_planned && step_lanes_.count(record.stream_step) == 0;
}

void coordinator_state::requeue(uint64_t request_id, bool preemption) {
    request_record& record = requests_.at(request_id);
    running_.erase(request_id);
    if (members_.count(record.worker_id) != 0) release_by_worker_[record.worker_id].push_back(request_id);
    release_transfer(record);
    // Recompute: prefill everything it has so far; its stream and sampler counter carry on.
    record.prefill = record.request.prompt;
    record.prefill.insert(record.prefill.end(), record.generated.begin(), record.generated.end());
    record.prefill_done = 0;
    record.cached = 0;
    record.inflight_prefill = 0;
    record.inflight_tokens = 0;
    record.inflight_samples = 0;
    ++record.epoch;  // what its steps in flight return no longer counts
    record.worker_id = 0;
    record.on_prefill = false;
    record.decode_worker = 0;
    record.stream_step = 0;
    record.stream_last_planned = false;
    record.expect_planned = false;
    record.import_step = 0;
    if (preemption) {
        ++record.preemptions;
        ++preemptions_;
    }
    queue_.insert(queue_.begin(), request_id);
}

void coordinator_state::preempt_to_fit() {
    for (const auto& [member_id, worker] : members_) {
        if (!worker.is_worker() || worker.kv_pages <= 0) continue;
        while (reserved_pages(member_id) > worker.kv_pages) {
            uint64_t victim = 0, order = 0;
            size_t on_worker = 0;
            for (uint64_t request_id : running_) {
                const request_record& record = requests_.at(request_id);
                if (record.worker_id != member_id) continue;
                ++on_worker;
                if (record.admit_order >= order) victim = request_id, order = record.admit_order;
            }
            if (victim == 0) break;
            if (on_worker == 1) {
                const request_record& record = requests_.at(victim);
                finished_.push_back(end_request(
                    victim, "error",
                    "request " + std::to_string(victim) + " needs " +
                        std::to_string(reservation(worker, record)) +
                        " KV pages, more than " + worker.greeting.name + "'s pool of " +
                        std::to_string(worker.kv_pages),
                    proto::request_error::invalid_request));
                continue;
            }
            preempt(victim);
        }
    }
}

void coordinator_state::admit_queued() {
    if (!serving()) return;
    preempt_to_fit();
    const auto workers = ready_workers();
    if (workers.empty()) return;
    while (!queue_.empty() && running_.size() < static_cast<size_t>(config_.max_batch)) {
        const uint64_t request_id = queue_.front();
        request_record& record = requests_.at(request_id);
        // Owner: the ready worker with the most free pages (unaccounted pools count as roomy);
        // with disaggregation a prefill worker (another than the one whose transfer failed, when
        // there is one) plus a decode worker for its pages.
        const bool pd = pd_mode();
        auto roomiest = [&](bool prefill_role, uint64_t avoid) {
            const member_record* best = nullptr;
            int64_t best_free = 0;
            for (const member_record* w : workers) {
                if (pd && w->is_prefill() != prefill_role) continue;
                const int64_t free = w->kv_pages > 0 ? w->kv_pages - reserved_pages(w->id)
                                                     : std::numeric_limits<int64_t>::max();
                const bool avoided = w->id == avoid, best_avoided = best && best->id == avoid;
                if (!best || (best_avoided && !avoided) || (avoided == best_avoided && free > best_free))
                    best = w, best_free = free;
            }
            return std::pair{best, best_free};
        };
        const auto [owner, best_free] = roomiest(true, record.transfer_from);
        if (!owner) break;
        // Queue first: the whole prefill + 1 token must fit beside the running reservations.
        const int64_t need = pages_for(*owner, static_cast<int64_t>(record.prefill.size()) + 1);
        if (owner->kv_pages > 0 && need > best_free) break;
        const member_record* decode = nullptr;
        if (pd) {
            const auto [d, d_free] = roomiest(false, 0);
            if (!d) break;
            if (d->kv_pages > 0 && pages_for(*d, static_cast<int64_t>(record.prefill.size()) + 1) > d_free) break;
            decode = d;
        }
        queue_.erase(queue_.begin());
        record.worker_id = owner->id;
        record.on_prefill = decode != nullptr;
        record.decode_worker = decode ? decode->id : 0;
        record.admit_order = next_admit_order_++;
        running_.insert(request_id);
    }
}

proto::step_sequence coordinator_state::sequence_for(const request_record& record, planned_run& run) const {
    proto::step_sequence seq;
    seq.request_id = record.id;
    seq.cached_tokens = record.planned_cached();
    run = {};
    run.epoch = record.epoch;
    run.tokens = next_step_tokens(record);
    if (record.planned_prefill_done() < record.prefill.size()) {
        const auto begin = record.prefill.begin() + static_cast<std::ptrdiff_t>(record.planned_prefill_done());
        seq.new_tokens.assign(begin, begin + run.tokens);
        run.prefill = run.tokens;
        run.samples = record.planned_prefill_done() + static_cast<size_t>(run.tokens) >= record.prefill.size() ? 1 : 0;
    } else {
        // A decode: its input is the last sampled token — known here, or still in flight, or (the
        // step that imports its KV) the decode worker's from the prefill_done frame.
        if (record.inflight_samples == 0 && !record.generated.empty() && record.import_step == 0)
            seq.new_tokens = {record.generated.back()};
        else seq.decode_last_sampled = true;
        run.samples = 1;
    }
    seq.token_index = static_cast<uint64_t>(record.planned_generated());
    seq.temperature = record.request.temperature;
    seq.top_p = record.request.top_p;
    seq.top_k = record.request.top_k;
    seq.seed = record.request.seed;
    return seq;
}

void coordinator_state::fill_sequences(step_batch& batch) {
    auto& planned = planned_[batch.step_id];
    for (uint64_t request_id : running_) {
        request_record& record = requests_.at(request_id);
        if (!schedulable(record)) continue;  // reaches max_tokens in a step already in flight
        if (record.import_step != 0 && record.import_step != batch.step_id) continue;  // import in flight
        auto plan = batch.plans.find(record.worker_id);
        if (plan == batch.plans.end()) continue;
        planned_run run;
        const auto first_token = static_cast<int64_t>(record.planned_prefill_done());
        proto::step_sequence seq = sequence_for(record, run);
        // Disaggregation: the prefill chunk's KV goes to the decode worker after this forward.
        const member_record* decode = record.on_prefill ? member(record.decode_worker) : nullptr;
        if (decode && run.prefill > 0) {
            const int64_t end = first_token + run.prefill;
            const bool last = end >= static_cast<int64_t>(record.prefill.size());
            plan->second.transfers.push_back({request_id, decode->greeting.name,
                                              decode->greeting.data_plane_address, first_token, end,
                                              record.epoch, last});
            record.stream_step = batch.step_id;
            record.stream_last_planned = last;
            record.transfer_from = record.worker_id;
        }
        record.inflight_tokens += run.tokens;
        record.inflight_prefill += static_cast<size_t>(run.prefill);
        record.inflight_samples += run.samples;
        planned[request_id] = run;
        plan->second.sequences.push_back(std::move(seq));
    }
}

step_batch coordinator_state::plan_step(const std::string& lane) {
    for (finished_request& f : expire_deadlines()) finished_.push_back(std::move(f));
    admit_queued();  // preemptions first, then admissions: the boundary's scheduling
    step_batch batch;
    batch.step_id = next_step_id_++;
    batch.lane = lane;
    step_lanes_[batch.step_id] = lane;
    for (const member_record* worker : ready_workers(lane)) {
        proto::step_plan& plan = batch.plans[worker->id];
        plan.step_id = batch.step_id;
        plan.placement_version = map_.version;
        if (auto it = release_by_worker_.find(worker->id); it != release_by_worker_.end()) {
            plan.released = std::move(it->second);
            release_by_worker_.erase(it);
        }
        if (auto it = kv_release_by_worker_.find(worker->id); it != kv_release_by_worker_.end()) {
            plan.released_kv = std::move(it->second);
            kv_release_by_worker_.erase(it);
        }
    }
    plan_imports(batch);
    fill_sequences(batch);
    return batch;
}

// Disaggregation, the decode worker's side of a plan: pages for a request whose prefill started
// (its KV frames land in them as they come), and the import of a request whose KV is all sent
// (the last chunk's result is in, with the first token): it moves to the decode worker, which
// decodes it in this step.
void coordinator_state::plan_imports(step_batch& batch) {
    for (uint64_t request_id : running_) {
        request_record& record = requests_.at(request_id);
        if (!record.on_prefill) continue;
        auto decode_plan = batch.plans.find(record.decode_worker);
        const member_record* prefill_worker = member(record.worker_id);
        if (!record.expect_planned && decode_plan != batch.plans.end() && prefill_worker) {
            decode_plan->second.expects.push_back({request_id, prefill_worker->greeting.name,
                                                   static_cast<int64_t>(record.prefill.size()),
                                                   config_.kv_transfer_timeout_ms, record.epoch});
            record.expect_planned = true;
        }
        if (!record.expect_planned || !kv_sent(record) || !record.prefilled() || record.generated.empty()) continue;
        if (record.inflight_tokens != 0 || record.inflight_samples != 0) continue;
        auto to = batch.plans.find(record.decode_worker);
        const member_record* prefill = member(record.worker_id);
        if (to == batch.plans.end() || !prefill) continue;
        to->second.imports.push_back({request_id, prefill->greeting.name, static_cast<int64_t>(record.prefill.size()),
                                      config_.kv_transfer_timeout_ms, record.epoch});
        record.transfer_from = record.worker_id;
        record.worker_id = record.decode_worker;
        record.on_prefill = false;
        record.stream_step = 0;
        record.stream_last_planned = false;
        record.expect_planned = false;
        record.import_step = batch.step_id;
    }
}

finished_request coordinator_state::end_request(uint64_t request_id, const std::string& reason,
                                                const std::string& error, proto::request_error kind) {
    finished_request out;
    out.id = request_id;
    out.reply.request_id = request_id;
    out.reply.finish_reason = reason;
    out.reply.error = error;
    out.reply.error_kind = error.empty() ? proto::request_error::none : kind;
    if (auto it = requests_.find(request_id); it != requests_.end()) {
        out.reply.tokens = it->second.generated;
        out.reply.prompt_tokens = static_cast<int64_t>(it->second.request.prompt.size());
        out.reply.preemptions = it->second.preemptions;
        if (running_.count(request_id) != 0 && members_.count(it->second.worker_id) != 0)
            release_by_worker_[it->second.worker_id].push_back(request_id);
        release_transfer(it->second);
        requests_.erase(it);
    }
    running_.erase(request_id);
    queue_.erase(std::remove(queue_.begin(), queue_.end(), request_id), queue_.end());
    return out;
}

std::vector<finished_request> coordinator_state::emit_tokens(
    uint64_t step_id, const std::vector<proto::step_result>& results) {
    ++steps_done_;
    std::string step_error;
    for (const proto::step_result& result : results)
        if (!result.error.empty()) step_error += (step_error.empty() ? "" : "; ") + result.error;
    if (!step_error.empty()) {
        // Name the expert group the failure is about, with its experts, when a worker's error
        // mentions one (its name or data-plane address).
        std::string named;
        auto mentions = [&](const std::string& text) {
            // Whole words only: "experts-1" must not match "experts-10", nor ":41" match ":412".
            for (auto at = step_error.find(text); !text.empty() && at != std::string::npos;
                 at = step_error.find(text, at + 1)) {
                const size_t end = at + text.size();
                if (end == step_error.size() || !std::isalnum(static_cast<unsigned char>(step_error[end])))
                    return true;
            }
            return false;
        };
        for (const auto& [name, description] : down_groups_)
            if (named.empty() && mentions(name)) named = "expert group " + description + " is down";
        for (const auto& [id, m] : members_)
            if (!m.is_worker() && named.empty() && mentions(m.greeting.name))
                named = "expert group " + describe_group(m) + " failed";
        for (const auto& [id, m] : members_)
            if (!m.is_worker() && named.empty() && mentions(m.greeting.data_plane_address))
                named = "expert group " + describe_group(m) + " failed";
        return fail_step(step_id, named.empty() ? step_error : named + ": " + step_error);
    }
    std::map<uint64_t, planned_run> planned;
    if (auto it = planned_.find(step_id); it != planned_.end()) {
        planned = std::move(it->second);
        planned_.erase(it);
    }
    step_lanes_.erase(step_id);  // a last KV chunk sent by it may be imported now (kv_sent)
    std::vector<finished_request> out;
    // Requests a worker failed (a KV import or transfer under disaggregation, or a sequence the
    // worker does not hold as planned): once more from a prefill (on another prefill worker),
    // then a named error. A failure reported by a step planned before the request was requeued
    // (the pipelined step after the one that failed it) is that same failure: it is dropped.
    for (const proto::step_result& result : results) {
        for (size_t idx = 0; idx < result.failed_requests.size(); ++idx) {
            const uint64_t request_id = result.failed_requests[idx];
            const std::string reason = idx < result.failed_reasons.size() ? result.failed_reasons[idx] : "";
            auto it = requests_.find(request_id);
            if (it == requests_.end() || running_.count(request_id) == 0) continue;
            request_record& record = it->second;
            if (auto run = planned.find(request_id);
                run != planned.end() && run->second.epoch != record.epoch)
                continue;
            planned.erase(request_id);
            if (record.transfer_failures++ == 0) {
                requeue(request_id, false);
                continue;
            }
            const member_record* from = member(record.transfer_from);
            const std::string what = from ? "KV transfer from " + from->greeting.name
                                     : record.on_prefill || record.transfer_from != 0
                                         ? "KV transfer from its prefill worker"
                                         : "its worker";
            out.push_back(end_request(request_id, "error",
                                      "request " + std::to_string(request_id) + ": " + what +
                                          " failed twice: " + reason));
        }
    }
    // Imports this step made: their requests decode on (a failed one was requeued above, its
    // attempt released on the decode worker through release_transfer).
    for (uint64_t request_id : running_)
        if (requests_.at(request_id).import_step == step_id) requests_.at(request_id).import_step = 0;
    std::unordered_map<uint64_t, int32_t> sampled;
    size_t num_sampled = 0;
    for (const proto::step_result& result : results) num_sampled += result.tokens.size();
    sampled.reserve(num_sampled);
    for (const proto::step_result& result : results)
        for (const proto::sampled_token& token : result.tokens) sampled[token.request_id] = token.token;
    for (const auto& [request_id, run] : planned) {
        auto it = requests_.find(request_id);
        if (it == requests_.end() || it->second.epoch != run.epoch) continue;  // ended or preempted
        request_record& record = it->second;
        record.inflight_tokens -= run.tokens;
        record.inflight_prefill -= static_cast<size_t>(run.prefill);
        record.inflight_samples -= run.samples;
        if (running_.count(request_id) == 0) continue;
        record.cached += run.tokens;
        record.prefill_done += static_cast<size_t>(run.prefill);
        if (run.samples == 0) continue;  // a non-final prefill chunk: its sample is not used
        auto token = sampled.find(request_id);
        if (token == sampled.end()) {
            out.push_back(end_request(request_id, "error",
                                      "step " + std::to_string(step_id) + " returned no token for request " +
                                          std::to_string(request_id)));
            continue;
        }
        record.generated.push_back(token->second);
        if (record.request.stream) {
            if (deltas_.empty() || deltas_.back().id != record.id) deltas_.push_back({record.id, {}});
            deltas_.back().tokens.push_back(token->second);
        }
        if (token->second == eos_token_id_ && !record.request.ignore_eos)
            out.push_back(end_request(record.id, "stop", ""));
        else if (static_cast<int64_t>(record.generated.size()) >= record.request.max_tokens)
            out.push_back(end_request(record.id, "length", ""));
    }
    for (auto& f : take_finished()) out.push_back(std::move(f));
    return out;
}

std::vector<finished_request> coordinator_state::fail_step(uint64_t step_id, const std::string& error) {
    planned_.erase(step_id);
    std::string lane;
    if (auto it = step_lanes_.find(step_id); it != step_lanes_.end()) lane = it->second;
    step_lanes_.erase(step_id);
    std::vector<finished_request> out;
    for (uint64_t request_id : std::vector<uint64_t>(running_.begin(), running_.end())) {
        const member_record* owner = member(requests_.at(request_id).worker_id);
        if (!lane.empty() && owner && lane_of(*owner) != lane) continue;  // another lane's
        out.push_back(end_request(request_id, "error", "step " + std::to_string(step_id) + ": " + error));
    }
    for (auto& f : take_finished()) out.push_back(std::move(f));
    return out;
}

std::vector<token_delta> coordinator_state::take_deltas() {
    std::vector<token_delta> out = std::move(deltas_);
    deltas_.clear();
    return out;
}

std::vector<finished_request> coordinator_state::take_finished() {
    std::vector<finished_request> out = std::move(finished_);
    finished_.clear();
    return out;
}

void coordinator_state::discard_plan(step_batch& batch) {
    // (Only empty plans are discarded: none of them sends, expects or imports KV.)
    step_lanes_.erase(batch.step_id);
    if (auto it = planned_.find(batch.step_id); it != planned_.end()) {
        for (const auto& [request_id, run] : it->second) {
            auto record = requests_.find(request_id);
            if (record == requests_.end() || record->second.epoch != run.epoch) continue;
            record->second.inflight_tokens -= run.tokens;
            record->second.inflight_prefill -= static_cast<size_t>(run.prefill);
            record->second.inflight_samples -= run.samples;
        }
        planned_.erase(it);
    }
    for (auto& [worker_id, plan] : batch.plans) {
        if (members_.count(worker_id) == 0) continue;
        auto& pending = release_by_worker_[worker_id];
        pending.insert(pending.end(), plan.released.begin(), plan.released.end());
        plan.released.clear();
        auto& pending_kv = kv_release_by_worker_[worker_id];
        pending_kv.insert(pending_kv.end(), plan.released_kv.begin(), plan.released_kv.end());
        plan.released_kv.clear();
    }
    batch.plans.clear();
}

proto::cluster_status coordinator_state::status() const {
    proto::cluster_status out;
    out.reason = not_serving_reason();
    out.serving = out.reason.empty();
    out.map = map_;
    for (const auto& [id, m] : members_) {
        std::string line = m.greeting.name + " (" + std::string(proto::to_string(m.greeting.role)) +
                           ", " + (m.ready ? "ready" : "loading") + ", placement v" +
                           std::to_string(m.acked_version) + ", " + m.greeting.data_plane_address;
        if (!m.is_worker()) line += ", experts " + format_expert_list(m.experts_by_layer.empty() ? std::vector<int32_t>{} : m.experts_by_layer[0]);
        if (const std::string lane = lane_of(m); !lane.empty()) line += ", " + lane + " pool";
        out.members.push_back(line + ")");
    }
    out.steps = steps_done_;
    out.running_requests = running_.size();
    out.queued_requests = queue_.size();
    out.preemptions = preemptions_;
    for (const auto& [id, m] : members_) {
        if (!m.is_worker() || m.kv_pages <= 0) continue;
        out.kv_pages_total += m.kv_pages;
        out.kv_pages_reserved += reserved_pages(id);
    }
    return out;
}

}  // namespace longcat::coordinator

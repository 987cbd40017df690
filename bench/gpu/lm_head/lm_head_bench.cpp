// Checks and times the fused LM head (lm_head.h) against the materialised path and LibTorch's
// composite, in LibTorch C++ (no Java), on the GPU or the CPU:
//
//   fused         lm_head.h: forward (chunks of h W^T + spo4j's forward), then the recompute
//                 backward (dh, dW): at most --chunk-mb MiB of logits at a time (4 GEMMs)
//   single        lm_head.h's single pass: forward and backward on each chunk's logits (3 GEMMs;
//                 the regime of SFT and of preference losses whose pairs fit a chunk)
//   pairs         lm_head.h's pair pass: the single pass over chunks of whole pairs of T tokens
//                 (the largest power of two whose pair fits a chunk and divides N), each chunk's
//                 g from its own SPO loss by spo4j's loss kernel (the Java objective's regime)
//   materialised  z = h W^T in full, spo4j's forward and in-place backward over z, dh = z W,
//                 dW = z^T h
//   composite     linear -> log_softmax -> gather -> autograd (LibTorch's own path)
//
// Validation first: fused and single vs composite in float64 on the first rows (logp, dh, dW),
// and the pair pass (chunks of 3 pairs of 32 tokens) vs the recompute path with g from the whole
// batch's loss; exit 1 when they disagree. Then each provider runs --reps times after a warm-up; the median time
// and (on CUDA) the peak extra allocated bytes of one call are printed, and written as JSON
// with --json FILE:
//   lm_head_bench --device cuda|cpu [--dtype f32|bf16] [--hidden H] [--vocab V] [--rows N]
//                 [--chunk-mb MiB] [--reps R] [--json FILE]
// Defaults: Qwen2.5-0.5B's head (H 896, V 151936), N 8192, 256 MiB chunks. Exit status: 0 ok,
// 1 a check failed, 2 usage / no device. Build: CMakeLists.txt here (as bench/gpu/train_step).
#include "lm_head.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#ifdef SPO4J_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace {

struct Options {
    std::string device = "cuda", dtype = "f32", json;
    int64_t hidden = 896, vocab = 151936, rows = 8192, chunk_mb = 256;
    int reps = 5;
};

void sync(const torch::Device& d) {
#ifdef SPO4J_TORCH_CUDA
    if (d.is_cuda()) c10::cuda::getCurrentCUDAStream(d.index()).synchronize();
#endif
    (void)d;
}

void reset_peak(const torch::Device& d) {
#ifdef SPO4J_TORCH_CUDA
    if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(d.index());
#endif
    (void)d;
}

/// Bytes allocated now and the peak since the last reset (CUDA); -1 on the CPU.
std::pair<int64_t, int64_t> allocated(const torch::Device& d) {
#ifdef SPO4J_TORCH_CUDA
    if (d.is_cuda()) {
        const auto s = c10::cuda::CUDACachingAllocator::getDeviceStats(d.index());
        const auto& a = s.allocated_bytes[0];  // StatType::AGGREGATE
        return {a.current, a.peak};
    }
#endif
    (void)d;
    return {-1, -1};
}

struct Inputs {
    torch::Tensor h, w, t, g;
    int64_t seq_len = 0;          // the pair pass's T (0: no pair pass)
    torch::Tensor ref_c, ref_r;  // its reference log-probs, fp32 [N / 2T]
};

/// SPO, beta 0.1, target margin 1: the loss of the pair pass (any loss summed over pairs would do).
spo4j_loss_params spo_params() {
    spo4j_loss_params lp{};
    lp.type = SPO4J_LOSS_SPO;
    lp.beta = 0.1f;
    lp.margin = 1.0f;
    lp.margin_floor = 1.0f;
    lp.tau = 0.05f;
    lp.gamma = 0.5f;
    return lp;
}

/// Reference log-probs for B pairs of T tokens: near the sums a random head gives (-ln V per token).
void make_refs(Inputs& in, int64_t seq_len) {
    const int64_t pairs = in.h.size(0) / (2 * seq_len);
    const double base = -std::log(double(in.w.size(0))) * double(seq_len);
    const auto f32 = torch::TensorOptions().dtype(torch::kFloat);
    in.seq_len = seq_len;
    in.ref_c = (torch::randn({pairs}, f32) * 5.0 + base).to(in.h.device());
    in.ref_r = (torch::randn({pairs}, f32) * 5.0 + base).to(in.h.device());
}

/// The recompute path with g from the whole batch's pair loss: what the pair pass must equal.
std::vector<torch::Tensor> pairs_by_recompute(const Inputs& in, int64_t chunk_bytes) {
    const int64_t n = in.h.size(0), t = in.seq_len, pairs = n / (2 * t);
    auto f = spo4j_lm_head::forward(in.h, in.w, in.t, false, chunk_bytes);
    const torch::Tensor seq = f.logp.view({2 * pairs, t}).sum(1);
    auto g = spo4j_lm_head::pair_loss_grads(spo_params(), seq.narrow(0, 0, pairs).contiguous(),
                                            seq.narrow(0, pairs, pairs).contiguous(), in.ref_c, in.ref_r);
    const torch::Tensor g_rows = torch::cat({g.first, g.second}).unsqueeze(1).expand({2 * pairs, t}).reshape({n})
                                     .contiguous();
    auto b = spo4j_lm_head::backward(in.h, in.w, in.t, f.lse, g_rows, true, chunk_bytes);
    return {f.logp, b.dh, b.dw};
}

/// One provider's forward + backward; returns {logp, dh, dW}.
std::vector<torch::Tensor> run(const std::string& provider, const Inputs& in, int64_t chunk_bytes) {
    if (provider == "fused") {
        auto f = spo4j_lm_head::forward(in.h, in.w, in.t, false, chunk_bytes);
        auto b = spo4j_lm_head::backward(in.h, in.w, in.t, f.lse, in.g, true, chunk_bytes);
        return {f.logp, b.dh, b.dw};
    }
    if (provider == "single") {
        auto r = spo4j_lm_head::single_pass(in.h, in.w, in.t, in.g, true, chunk_bytes);
        return {r.first.logp, r.second.dh, r.second.dw};
    }
    if (provider == "pairs") {
        auto r = spo4j_lm_head::pair_pass(in.h, in.w, in.t, in.seq_len, in.ref_c, in.ref_r, spo_params(), true,
                                          chunk_bytes);
        return {r.first.logp, r.second.dh, r.second.dw};
    }
    if (provider == "materialised") {
        torch::NoGradGuard no_grad;
        torch::Tensor z = torch::mm(in.h, in.w.t());
        const auto f32 = in.h.options().dtype(torch::kFloat);
        torch::Tensor logp = torch::empty({in.h.size(0)}, f32), lse = torch::empty({in.h.size(0)}, f32);
        spo4j_lm_head::kernel_fwd(z, in.t, logp, lse, torch::Tensor(), false);
        spo4j_lm_head::kernel_bwd_in_place(z, in.t, lse, in.g, false);
        return {logp, torch::mm(z, in.w), torch::mm(z.t(), in.h)};
    }
    // composite: LibTorch autograd; ignored rows have g = 0, so clamping their target is harmless
    torch::Tensor h = in.h.detach().clone().requires_grad_(true), w = in.w.detach().clone().requires_grad_(true);
    torch::Tensor lp = torch::log_softmax(torch::linear(h, w), 1).gather(1, in.t.clamp_min(0).unsqueeze(1)).squeeze(1);
    lp.backward(in.g.to(lp.scalar_type()));
    return {lp.detach(), h.grad(), w.grad()};
}

/// ||a - b|| / ||b|| (Frobenius, in float64; 0 when both are 0): a normwise relative error,
/// which a max-norm error over max(1, max |b|) is not for gradients of entries far below 1
/// (it let errors as large as bf16 dh's entries pass).
double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
    const torch::Tensor bd = b.to(torch::kDouble).cpu();
    const double diff = (a.to(torch::kDouble).cpu() - bd).norm().item<double>(), scale = bd.norm().item<double>();
    return scale > 0 ? diff / scale : diff;
}

int usage() {
    std::fprintf(stderr,
                 "usage: lm_head_bench --device cuda|cpu [--dtype f32|bf16] [--hidden H] [--vocab V] [--rows N]\n"
                 "                     [--chunk-mb MiB] [--reps R] [--json FILE]\n");
    return 2;
}

int main_impl(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) return usage();
        const std::string v = argv[++i];
        if (a == "--device") o.device = v;
        else if (a == "--dtype") o.dtype = v;
        else if (a == "--json") o.json = v;
        else if (a == "--hidden") o.hidden = std::atoll(v.c_str());
        else if (a == "--vocab") o.vocab = std::atoll(v.c_str());
        else if (a == "--rows") o.rows = std::atoll(v.c_str());
        else if (a == "--chunk-mb") o.chunk_mb = std::atoll(v.c_str());
        else if (a == "--reps") o.reps = std::atoi(v.c_str());
        else return usage();
    }
    if ((o.device != "cuda" && o.device != "cpu") || (o.dtype != "f32" && o.dtype != "bf16") || o.reps < 1 ||
        o.hidden < 1 || o.vocab < 1 || o.rows < 1 || o.chunk_mb < 1)
        return usage();
#ifndef SPO4J_TORCH_CUDA
    if (o.device == "cuda") {
        std::fprintf(stderr, "lm_head_bench: built against a LibTorch without CUDA\n");
        return 2;
    }
#else
    if (o.device == "cuda" && !torch::cuda::is_available()) {
        std::fprintf(stderr, "lm_head_bench: LibTorch sees no CUDA device\n");
        return 2;
    }
#endif
    // an explicit index: the allocator's stats calls below refuse device -1 ("current")
    const torch::Device dev = o.device == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
    const auto dt = o.dtype == "f32" ? torch::kFloat : torch::kBFloat16;
    const int64_t chunk_bytes = o.chunk_mb << 20;
    torch::manual_seed(21);
    Inputs in;
    in.h = torch::randn({o.rows, o.hidden}).to(dev, dt);
    in.w = (torch::randn({o.vocab, o.hidden}) / std::sqrt(double(o.hidden))).to(dev, dt);
    in.t = torch::randint(o.vocab, {o.rows}, torch::TensorOptions().dtype(torch::kLong)).to(dev);
    in.g = torch::randn({o.rows}).to(dev);
    // an eighth of the rows ignored (g = 0 there), every 8th, so that the rows validated below
    // (the first 512) hold scored ones at any N (a leading block of N / 8 covered all of them)
    const torch::Tensor ignored = (torch::arange(o.rows, torch::TensorOptions().dtype(torch::kLong)) % 8 == 0)
                                      .to(dev);
    in.t.masked_fill_(ignored, SPO4J_IGNORE_INDEX);
    in.g.masked_fill_(ignored, 0.0);

    // validation on the first rows (at most 512) against float64 composite
    {
        const int64_t m = std::min<int64_t>(o.rows, 512);
        Inputs s{in.h.narrow(0, 0, m).contiguous(), in.w, in.t.narrow(0, 0, m).contiguous(),
                 in.g.narrow(0, 0, m).contiguous()};
        Inputs s64{s.h.to(torch::kDouble), s.w.to(torch::kDouble), s.t, s.g.to(torch::kDouble)};
        // small chunks, so the check covers several chunks and a short last one
        const int64_t small = std::max<int64_t>(o.vocab * 6 * 7, 1);
        auto ref = run("composite", s64, 0);
        const torch::Tensor keep = s.t.ne(SPO4J_IGNORE_INDEX).to(torch::kDouble);
        for (const std::string p : {"fused", "single"}) {
            auto f = run(p, s, small);
            const double e_logp = rel_diff(f[0].to(torch::kDouble) * keep, ref[0] * keep);
            const double e_dh = rel_diff(f[1], ref[1]), e_dw = rel_diff(f[2], ref[2]);
            // fp32: GEMM and exp rounding; bf16: the logits and gradients are rounded to 8 bits
            const double tol = dt == torch::kFloat ? 1e-4 : 1e-2;
            std::printf("check %s %s %s: normwise relative error logp %.3g dh %.3g dW %.3g (tolerance %.0e)\n",
                        p.c_str(), o.device.c_str(), o.dtype.c_str(), e_logp, e_dh, e_dw, tol);
            if (!(e_logp <= tol && e_dh <= tol && e_dw <= tol)) {
                std::fprintf(stderr, "lm_head_bench: the %s head disagrees with the float64 composite\n", p.c_str());
                return 1;
            }
        }
        // the pair pass over chunks of 3 pairs of 32 tokens (the last of fewer) against the
        // recompute path with the whole batch's loss: the same per-pair gradients, so dh and dW
        // agree to rounding (the k/B scale, dW's sums over other chunks)
        const int64_t pm = m / 64 * 64;
        if (pm >= 128) {
            Inputs q{s.h.narrow(0, 0, pm).contiguous(), s.w, s.t.narrow(0, 0, pm).contiguous(), torch::Tensor()};
            make_refs(q, 32);
            const int64_t per_row = o.vocab * (dt == torch::kFloat ? 4 : 2 + 4);
            auto a = run("pairs", q, 3 * 64 * per_row), b = pairs_by_recompute(q, small);
            const double e_logp = rel_diff(a[0], b[0]), e_dh = rel_diff(a[1], b[1]), e_dw = rel_diff(a[2], b[2]);
            const double tol = dt == torch::kFloat ? 1e-5 : 1e-2;
            std::printf("check pairs %s %s (%lld pairs of 32 tokens, chunks of 3): normwise relative error vs recompute "
                        "logp %.3g dh %.3g dW %.3g (tolerance %.0e)\n", o.device.c_str(), o.dtype.c_str(),
                        (long long)(pm / 64), e_logp, e_dh, e_dw, tol);
            if (!(e_logp <= tol && e_dh <= tol && e_dw <= tol)) {
                std::fprintf(stderr, "lm_head_bench: the pair pass disagrees with the recompute path\n");
                return 1;
            }
        }
    }
    // the timed pair pass: T the largest power of two whose pair fits a chunk and divides N
    {
        const int64_t step = spo4j_lm_head::chunk_rows(o.vocab, dt, true, chunk_bytes);
        int64_t t = 0;
        for (int64_t c = 1; 2 * c <= std::min(step, o.rows); c *= 2)
            if (o.rows % (2 * c) == 0) t = c;
        if (t > 0) make_refs(in, t);
    }

    std::string json = "{\"device\": \"" + o.device + "\", \"dtype\": \"" + o.dtype + "\", \"hidden\": " +
                       std::to_string(o.hidden) + ", \"vocab\": " + std::to_string(o.vocab) + ", \"rows\": " +
                       std::to_string(o.rows) + ", \"chunk_mb\": " + std::to_string(o.chunk_mb) +
                       ", \"results\": [";
    bool first = true;
    for (const std::string p : {"fused", "single", "pairs", "materialised", "composite"}) {
        if (p == "pairs" && in.seq_len == 0) continue;  // not one pair fits a chunk
        std::vector<double> ms;
        int64_t peak_extra = -1;
        for (int r = 0; r <= o.reps; ++r) {  // r == 0: warm-up, also measures the peak
            sync(dev);
            reset_peak(dev);
            const int64_t before = allocated(dev).first;
            const auto t0 = std::chrono::steady_clock::now();
            { auto out = run(p, in, chunk_bytes); sync(dev); }
            const auto t1 = std::chrono::steady_clock::now();
            if (r == 0 && before >= 0) peak_extra = allocated(dev).second - before;
            if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        }
        std::sort(ms.begin(), ms.end());
        const double median = ms[ms.size() / 2];
        std::printf("%-12s %s %s H %lld V %lld N %lld: %.2f ms (median of %d), peak extra %.1f MiB\n", p.c_str(),
                    o.device.c_str(), o.dtype.c_str(), (long long)o.hidden, (long long)o.vocab, (long long)o.rows,
                    median, o.reps, peak_extra < 0 ? -1.0 : peak_extra / 1048576.0);
        json += std::string(first ? "" : ", ") + "{\"provider\": \"" + p + "\", \"median_ms\": " +
                std::to_string(median) + ", \"peak_extra_bytes\": " + std::to_string(peak_extra) +
                (p == "pairs" ? ", \"seq_len\": " + std::to_string(in.seq_len) : std::string()) + "}";
        first = false;
    }
    json += "]}\n";
    if (!o.json.empty()) {
        FILE* f = std::fopen(o.json.c_str(), "w");
        if (!f) {
            std::fprintf(stderr, "lm_head_bench: cannot write %s\n", o.json.c_str());
            return 2;
        }
        std::fputs(json.c_str(), f);
        std::fclose(f);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return main_impl(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "lm_head_bench: %s\n", e.what());
        return 1;
    }
}

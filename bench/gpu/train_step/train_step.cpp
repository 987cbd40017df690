// spo4j training step in LibTorch C++ (no Java): the closest a GPU run comes to
// `java -jar spo4j.jar train --device cuda` when the Java GPU stack cannot travel.
//
// One preference step of a small Llama-style model (token embedding, RMSNorm, rotary
// attention with grouped-query heads and a causal mask, SwiGLU MLP, untied lm_head), twice
// over the same parameters and batch:
//   fused     the model's logits [2B*T, V] through spo4j's kernels on LibTorch's current
//             stream: token log-probs forward, the preference loss, the token log-probs
//             backward IN PLACE over the logits, then logits.backward(dL/dlogits) into the
//             parameters (what spo4j's Java PreferenceObjective does);
//   composite log_softmax(logits.float()) -> gather -> masked row sums -> the loss in torch
//             ops -> autograd (LibTorch's own path, the reference),
// for SPO (with per-pair margins) and DPO, and compares the loss, dL/dlogits and every
// parameter gradient. The fused step runs with spo4j's checked entry points and again with
// the unchecked ones (no host synchronisation): both must give the same bytes.
//
//   train_step --device cuda|cpu [--dtype f32|bf16] [--json FILE] [--vocab V] [--hidden H]
//              [--layers L] [--pairs B] [--length T] [--reps N]
// Exit status: 0 all comparisons passed, 1 a comparison failed, 2 usage / setup problem.
// The same code runs on the CPU (spo4j's CPU kernels, --device cpu): that is how it is
// rehearsed on a machine without a GPU. Built by bench/gpu/run.sh (CMakeLists.txt here)
// against the LibTorch of the machine's Python torch wheel.
#include <torch/torch.h>

#ifdef SPO4J_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "spo4j.h"

namespace {

struct Options {
    std::string device = "cpu", dtype = "f32", json;
    int64_t vocab = 0, hidden = 0, layers = 2, pairs = 0, length = 0, heads = 4, kv_heads = 2;
    int reps = 5;
};

// ---- the model -------------------------------------------------------------------------

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w) {
    const torch::Tensor xf = x.to(torch::kFloat);
    const torch::Tensor r = torch::rsqrt(xf.pow(2).mean({-1}, true) + 1e-6);
    return (xf * r).to(x.scalar_type()) * w;
}

torch::Tensor rotate_half(const torch::Tensor& x) {
    const int64_t h = x.size(-1) / 2;
    return torch::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

struct Llama : torch::nn::Module {
    int64_t vocab, hidden, heads, kv_heads, head_dim;
    torch::Tensor embed, final_norm, lm_head;
    struct Layer {
        torch::Tensor attn_norm, wq, wk, wv, wo, mlp_norm, gate, up, down;
    };
    std::vector<Layer> layers;

    Llama(int64_t v, int64_t h, int64_t n_layers, int64_t n_heads, int64_t n_kv)
        : vocab(v), hidden(h), heads(n_heads), kv_heads(n_kv), head_dim(h / n_heads) {
        auto p = [&](const std::string& name, torch::Tensor t) { return register_parameter(name, t); };
        const double s = 1.0 / std::sqrt(double(h));
        embed = p("embed", torch::randn({v, h}) * 0.5);
        for (int64_t i = 0; i < n_layers; ++i) {
            const std::string n = "l" + std::to_string(i) + "_";
            Layer l;
            l.attn_norm = p(n + "attn_norm", torch::ones({h}) + 0.1 * torch::randn({h}));
            l.wq = p(n + "q", torch::randn({h, h}) * s);
            l.wk = p(n + "k", torch::randn({n_kv * head_dim, h}) * s);
            l.wv = p(n + "v", torch::randn({n_kv * head_dim, h}) * s);
            l.wo = p(n + "o", torch::randn({h, h}) * s);
            l.mlp_norm = p(n + "mlp_norm", torch::ones({h}) + 0.1 * torch::randn({h}));
            l.gate = p(n + "gate", torch::randn({2 * h, h}) * s);
            l.up = p(n + "up", torch::randn({2 * h, h}) * s);
            l.down = p(n + "down", torch::randn({h, 2 * h}) * s / std::sqrt(2.0));
            layers.push_back(l);
        }
        final_norm = p("final_norm", torch::ones({h}));
        lm_head = p("lm_head", torch::randn({v, h}) * (2.0 * s));
    }

    // [B, T] int64 ids -> [B, T, V] logits in the parameters' dtype.
    torch::Tensor forward(const torch::Tensor& ids) {
        const int64_t b = ids.size(0), t = ids.size(1);
        torch::Tensor x = torch::embedding(embed, ids);
        const auto fopt = torch::TensorOptions().dtype(torch::kFloat).device(ids.device());
        const torch::Tensor pos = torch::arange(t, fopt).unsqueeze(1);
        const torch::Tensor inv = torch::pow(10000.0, -torch::arange(0, head_dim, 2, fopt) / double(head_dim));
        const torch::Tensor freqs = torch::cat({pos * inv, pos * inv}, -1);  // [T, D]
        const torch::Tensor cos = freqs.cos().to(x.scalar_type()), sin = freqs.sin().to(x.scalar_type());
        const torch::Tensor causal =
            torch::ones({t, t}, torch::TensorOptions().dtype(torch::kBool).device(ids.device())).triu(1);
        for (const Layer& l : layers) {
            const torch::Tensor a = rms_norm(x, l.attn_norm);
            torch::Tensor q = torch::matmul(a, l.wq.t()).view({b, t, heads, head_dim}).transpose(1, 2);
            torch::Tensor k = torch::matmul(a, l.wk.t()).view({b, t, kv_heads, head_dim}).transpose(1, 2);
            torch::Tensor v = torch::matmul(a, l.wv.t()).view({b, t, kv_heads, head_dim}).transpose(1, 2);
            q = q * cos + rotate_half(q) * sin;
            k = k * cos + rotate_half(k) * sin;
            k = k.repeat_interleave(heads / kv_heads, 1);
            v = v.repeat_interleave(heads / kv_heads, 1);
            torch::Tensor sc = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(head_dim));
            sc = sc.to(torch::kFloat).masked_fill(causal, -std::numeric_limits<float>::infinity());
            const torch::Tensor att = torch::softmax(sc, -1).to(x.scalar_type());
            const torch::Tensor o = torch::matmul(att, v).transpose(1, 2).reshape({b, t, hidden});
            x = x + torch::matmul(o, l.wo.t());
            const torch::Tensor m = rms_norm(x, l.mlp_norm);
            const torch::Tensor g = torch::matmul(m, l.gate.t()), u = torch::matmul(m, l.up.t());
            x = x + torch::matmul(torch::silu(g) * u, l.down.t());
        }
        return torch::matmul(rms_norm(x, final_norm), lm_head.t());
    }
};

// ---- spo4j on the tensors' device ------------------------------------------------------

void* current_stream(const torch::Tensor& on) {
#ifdef SPO4J_TORCH_CUDA
    if (on.is_cuda()) return c10::cuda::getCurrentCUDAStream(on.device().index()).stream();
#endif
    (void)on;
    return nullptr;
}

void ok_or_throw(int status, const char* what) {
    if (status != SPO4J_OK)
        throw std::runtime_error(std::string(what) + ": status " + std::to_string(status) + ": " +
                                 spo4j_last_error());
}

int dtype_code(const torch::Tensor& t) {
    return t.scalar_type() == torch::kFloat ? SPO4J_F32 : t.scalar_type() == torch::kBFloat16 ? SPO4J_BF16 : SPO4J_F16;
}

void token_fwd(const torch::Tensor& z, const torch::Tensor& t, torch::Tensor& logp, torch::Tensor& lse,
               bool unchecked) {
    const int64_t rows = z.size(0), vocab = z.size(1);
    int st;
    if (z.is_cuda()) {
        auto f = unchecked ? spo4j_token_logprobs_fwd_cuda_unchecked : spo4j_token_logprobs_fwd_cuda;
        st = f(z.data_ptr(), dtype_code(z), rows, vocab, z.stride(0), t.data_ptr<int64_t>(), SPO4J_IGNORE_INDEX,
               logp.data_ptr<float>(), lse.data_ptr<float>(), nullptr, current_stream(z));
    } else {
        st = spo4j_token_logprobs_fwd_cpu(z.data_ptr(), dtype_code(z), rows, vocab, z.stride(0), t.data_ptr<int64_t>(),
                                          SPO4J_IGNORE_INDEX, logp.data_ptr<float>(), lse.data_ptr<float>(), nullptr,
                                          torch::get_num_threads());
    }
    ok_or_throw(st, "token log-probs forward");
}

void token_bwd_in_place(torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& lse,
                        const torch::Tensor& g, bool unchecked) {
    const int64_t rows = z.size(0), vocab = z.size(1);
    int st;
    if (z.is_cuda()) {
        auto f = unchecked ? spo4j_token_logprobs_bwd_cuda_unchecked : spo4j_token_logprobs_bwd_cuda;
        st = f(z.data_ptr(), dtype_code(z), rows, vocab, z.stride(0), t.data_ptr<int64_t>(), SPO4J_IGNORE_INDEX,
               lse.data_ptr<float>(), g.data_ptr<float>(), z.data_ptr(), z.stride(0), current_stream(z));
    } else {
        st = spo4j_token_logprobs_bwd_cpu(z.data_ptr(), dtype_code(z), rows, vocab, z.stride(0), t.data_ptr<int64_t>(),
                                          SPO4J_IGNORE_INDEX, lse.data_ptr<float>(), g.data_ptr<float>(), z.data_ptr(),
                                          z.stride(0), torch::get_num_threads());
    }
    ok_or_throw(st, "token log-probs backward");
}

struct Loss {
    int32_t type;
    float beta;
};

// The preference loss's kernel: returns the mean loss (a 0-dim tensor on the device) and
// fills grad_chosen / grad_rejected (dMEAN/dpolicy).
torch::Tensor pref_loss(const Loss& L, const torch::Tensor& pc, const torch::Tensor& pr, const torch::Tensor& rc,
                        const torch::Tensor& rr, const torch::Tensor& margin, torch::Tensor& gc, torch::Tensor& gr) {
    const spo4j_loss_params p{L.type, L.beta, 0.0f, 0.0f, 0.1f, 0.05f, 0.5f, 0.0f};
    torch::Tensor stats = torch::empty({SPO4J_STAT_COUNT}, pc.options());
    const float* m = L.type == SPO4J_LOSS_SPO ? margin.data_ptr<float>() : nullptr;
    int st;
    if (pc.is_cuda())
        st = spo4j_preference_loss_cuda(&p, pc.size(0), pc.data_ptr<float>(), pr.data_ptr<float>(), rc.data_ptr<float>(),
                                         rr.data_ptr<float>(), m, nullptr, gc.data_ptr<float>(), gr.data_ptr<float>(),
                                         stats.data_ptr<float>(), current_stream(pc));
    else
        st = spo4j_preference_loss_cpu(&p, pc.size(0), pc.data_ptr<float>(), pr.data_ptr<float>(), rc.data_ptr<float>(),
                                       rr.data_ptr<float>(), m, nullptr, gc.data_ptr<float>(), gr.data_ptr<float>(),
                                       stats.data_ptr<float>());
    ok_or_throw(st, "preference loss");
    return stats[SPO4J_STAT_LOSS];
}

struct Batch {
    torch::Tensor ids, targets, mask, ref_c, ref_r, margin;
    int64_t pairs, length;
};

struct StepOut {
    double loss;
    torch::Tensor grad_logits;  // fp32 copy [2B*T, V]
    std::vector<torch::Tensor> grads;
};

// spo4j's fused step (the Java PreferenceObjective's fused path in C++).
StepOut fused_step(Llama& model, const Batch& b, const Loss& L, bool unchecked) {
    model.zero_grad();
    torch::Tensor logits = model.forward(b.ids);  // [2B, T, V]
    const int64_t V = logits.size(-1), rows = b.pairs * 2 * b.length;
    torch::Tensor raw = logits.detach().view({rows, V});  // same storage, no autograd
    const torch::Tensor flat = b.targets.reshape({rows});
    const auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(logits.device());
    torch::Tensor logp = torch::empty({rows}, f32), lse = torch::empty({rows}, f32);
    token_fwd(raw, flat, logp, lse, unchecked);
    const torch::Tensor seq = logp.view({2 * b.pairs, b.length}).sum(1);  // ignored rows give 0
    const torch::Tensor pc = seq.narrow(0, 0, b.pairs).contiguous(), pr = seq.narrow(0, b.pairs, b.pairs).contiguous();
    torch::Tensor gc = torch::empty({b.pairs}, f32), gr = torch::empty({b.pairs}, f32);
    const torch::Tensor loss = pref_loss(L, pc, pr, b.ref_c, b.ref_r, b.margin, gc, gr);
    const torch::Tensor g = torch::cat({gc, gr}).unsqueeze(1).expand({2 * b.pairs, b.length}).contiguous().view({rows});
    token_bwd_in_place(raw, flat, lse, g, unchecked);  // raw (= logits' storage) now holds dL/dlogits
    logits.backward(raw.view(logits.sizes()));
    StepOut out{loss.item<double>(), raw.to(torch::kFloat).clone(), {}};
    for (const auto& p : model.parameters()) out.grads.push_back(p.grad().to(torch::kFloat).clone());
    return out;
}

// The same step in composite torch ops with autograd.
StepOut composite_step(Llama& model, const Batch& b, const Loss& L) {
    model.zero_grad();
    torch::Tensor logits = model.forward(b.ids);
    logits.retain_grad();
    const torch::Tensor lp = torch::log_softmax(logits.to(torch::kFloat), -1)
                                 .gather(-1, b.targets.clamp_min(0).unsqueeze(-1))
                                 .squeeze(-1) * b.mask;
    const torch::Tensor seq = lp.sum(1);
    const torch::Tensor h = (seq.narrow(0, 0, b.pairs) - b.ref_c) - (seq.narrow(0, b.pairs, b.pairs) - b.ref_r);
    torch::Tensor per_pair;
    if (L.type == SPO4J_LOSS_SPO) {
        per_pair = (L.beta * h - b.margin).pow(2);
    } else {  // DPO: -logsigmoid(beta h) = softplus(-beta h)
        per_pair = torch::softplus(-L.beta * h);
    }
    const torch::Tensor loss = per_pair.mean();
    loss.backward();
    const int64_t V = logits.size(-1);
    StepOut out{loss.item<double>(), logits.grad().to(torch::kFloat).reshape({-1, V}).clone(), {}};
    for (const auto& p : model.parameters()) out.grads.push_back(p.grad().to(torch::kFloat).clone());
    return out;
}

double rel_err(const torch::Tensor& got, const torch::Tensor& ref) {
    const double n = ref.norm().item<double>();
    return (got - ref).norm().item<double>() / (n > 0 ? n : 1.0);
}

bool same_bytes(const StepOut& a, const StepOut& b) {
    if (a.loss != b.loss || !torch::equal(a.grad_logits, b.grad_logits)) return false;
    for (size_t i = 0; i < a.grads.size(); ++i)
        if (!torch::equal(a.grads[i], b.grads[i])) return false;
    return true;
}

void sync(const torch::Device& d) {
#ifdef SPO4J_TORCH_CUDA
    if (d.is_cuda()) c10::cuda::getCurrentCUDAStream(d.index()).synchronize();
#endif
    (void)d;
}

int usage() {
    std::fprintf(stderr,
                 "usage: train_step --device cuda|cpu [--dtype f32|bf16] [--json FILE] [--vocab V] [--hidden H]\n"
                 "                  [--layers L] [--pairs B] [--length T] [--reps N]\n");
    return 2;
}

}  // namespace

int run(int argc, char** argv);

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "train_step: %s\n", e.what());
        return 1;
    }
}

int run(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) return usage();
        const std::string v = argv[++i];
        if (a == "--device") o.device = v;
        else if (a == "--dtype") o.dtype = v;
        else if (a == "--json") o.json = v;
        else if (a == "--vocab") o.vocab = std::atoll(v.c_str());
        else if (a == "--hidden") o.hidden = std::atoll(v.c_str());
        else if (a == "--layers") o.layers = std::atoll(v.c_str());
        else if (a == "--pairs") o.pairs = std::atoll(v.c_str());
        else if (a == "--length") o.length = std::atoll(v.c_str());
        else if (a == "--reps") o.reps = std::atoi(v.c_str());
        else return usage();
    }
    const bool cuda = o.device == "cuda";
    if (!cuda && o.device != "cpu") return usage();
#ifndef SPO4J_TORCH_CUDA
    if (cuda) {
        std::fprintf(stderr, "train_step: built against a LibTorch without CUDA\n");
        return 2;
    }
#else
    if (cuda && !torch::cuda::is_available()) {
        std::fprintf(stderr, "train_step: LibTorch sees no CUDA device\n");
        return 2;
    }
#endif
    // Shapes: small enough for a CPU rehearsal; on the GPU an LM-like vocabulary (block-per-row
    // launches) and enough rows to fill the chip.
    if (!o.vocab) o.vocab = cuda ? 32768 : 2053;
    if (!o.hidden) o.hidden = cuda ? 512 : 64;
    if (!o.pairs) o.pairs = cuda ? 8 : 3;
    if (!o.length) o.length = cuda ? 256 : 24;
    const torch::Device dev = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
    const auto dt = o.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
    if (o.dtype != "bf16" && o.dtype != "f32") return usage();

    torch::manual_seed(1234);
    Llama model(o.vocab, o.hidden, o.layers, o.heads, o.kv_heads);
    model.to(dev, dt);

    // A batch as the collator lays it out: rows 0..B-1 prompt+chosen, B..2B-1 prompt+rejected;
    // targets = next token on completion positions, -100 on prompt and padding.
    Batch b;
    b.pairs = o.pairs;
    b.length = o.length;
    const int64_t R = 2 * o.pairs, T = o.length;
    torch::Tensor ids = torch::randint(o.vocab, {R, T}, torch::kLong);
    torch::Tensor tg = torch::full({R, T}, int64_t(SPO4J_IGNORE_INDEX), torch::kLong);
    std::vector<int64_t> prompt(static_cast<size_t>(o.pairs));
    auto ia = ids.accessor<int64_t, 2>();
    auto ta = tg.accessor<int64_t, 2>();
    for (int64_t r = 0; r < R; ++r) {
        const int64_t p = r < o.pairs ? 1 + (7 * r) % (T / 2) : prompt[size_t(r - o.pairs)];
        if (r < o.pairs) prompt[size_t(r)] = p;
        const int64_t end = T - (3 * r) % (T / 4);  // right padding
        for (int64_t t = p; t + 1 < end; ++t) ta[r][t] = ia[r][t + 1];
    }
    b.ids = ids.to(dev);
    b.targets = tg.to(dev);
    b.mask = (tg != SPO4J_IGNORE_INDEX).to(torch::kFloat).to(dev);
    const auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(dev);
    b.ref_c = (torch::randn({o.pairs}) * 3 - 5.0 * T).to(f32);
    b.ref_r = (torch::randn({o.pairs}) * 3 - 5.0 * T).to(f32);
    b.margin = torch::randn({o.pairs}).to(f32);

    // Error model: fp32 logits: both paths compute the same logits; log_softmax and its
    // gradient differ by fp32 rounding (relative ~1e-6; CUDA's fast exp ~2 ulp) -> 1e-4 on norms.
    // bf16: dL/dlogits is stored in bf16 by both paths (spo4j's in-place gradient, the
    // autograd of .float()), so entries differ by up to one bf16 unit (2^-8) where the fp32
    // values straddle a rounding boundary -> 1e-2 on norms (METHOD: bf16 1e-3..1e-2).
    const double tol = dt == torch::kBFloat16 ? 1e-2 : 1e-4;
    bool all_ok = true;
    std::string rows_json;
    for (const Loss& L : {Loss{SPO4J_LOSS_SPO, 0.05f}, Loss{SPO4J_LOSS_DPO, 0.1f}}) {
        const char* lname = L.type == SPO4J_LOSS_SPO ? "spo" : "dpo";
        StepOut fused = fused_step(model, b, L, false);
        StepOut unchecked = fused_step(model, b, L, true);
        StepOut ref = composite_step(model, b, L);
        const double loss_err = std::fabs(fused.loss - ref.loss) / std::max(1.0, std::fabs(ref.loss));
        const double glog = rel_err(fused.grad_logits, ref.grad_logits);
        double gmax = 0;
        std::string worst;
        const auto names = model.named_parameters();
        for (size_t i = 0; i < ref.grads.size(); ++i) {
            const double e = rel_err(fused.grads[i], ref.grads[i]);
            if (e > gmax) {
                gmax = e;
                worst = names[i].key();
            }
        }
        const bool same = same_bytes(fused, unchecked);
        const bool finite = std::isfinite(fused.loss) && torch::isfinite(fused.grad_logits).all().item<bool>();
        const bool ok = finite && loss_err <= tol && glog <= tol && gmax <= tol && same;
        all_ok &= ok;
        // timings: whole step (forward + loss + backward into the parameters), median of reps
        std::vector<double> tf, tu, tc;
        for (int rep = 0; rep < o.reps; ++rep) {
            for (int which = 0; which < 3; ++which) {
                sync(dev);
                const auto t0 = std::chrono::steady_clock::now();
                if (which == 0) fused_step(model, b, L, false);
                if (which == 1) fused_step(model, b, L, true);
                if (which == 2) composite_step(model, b, L);
                sync(dev);
                const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
                (which == 0 ? tf : which == 1 ? tu : tc).push_back(ms);
            }
        }
        auto med = [](std::vector<double> v) {
            std::sort(v.begin(), v.end());
            return v.empty() ? 0.0 : v[v.size() / 2];
        };
        std::printf("train_step %s %s %s: loss fused %.7g composite %.7g (rel %.2e), dL/dlogits rel %.2e, "
                    "param grads max rel %.2e (%s), unchecked == checked: %s, tol %.0e -> %s\n",
                    o.device.c_str(), o.dtype.c_str(), lname, fused.loss, ref.loss, loss_err, glog, gmax, worst.c_str(),
                    same ? "yes" : "NO", tol, ok ? "ok" : "FAILED");
        std::printf("train_step %s %s %s: step ms (median of %d): fused %.3f, fused unchecked %.3f, composite %.3f\n",
                    o.device.c_str(), o.dtype.c_str(), lname, o.reps, med(tf), med(tu), med(tc));
        // a non-finite value as JSON null: printf's "nan" / "inf" would make the file unreadable
        auto num = [](double v, const char* fmt) {
            if (!std::isfinite(v)) return std::string("null");
            char b[64];
            std::snprintf(b, sizeof b, fmt, v);
            return std::string(b);
        };
        char buf[1024];
        std::snprintf(buf, sizeof buf,
                      "%s{\"loss\": \"%s\", \"loss_fused\": %s, \"loss_composite\": %s, \"loss_rel_err\": %s, "
                      "\"grad_logits_rel_err\": %s, \"param_grad_max_rel_err\": %s, \"worst_param\": \"%s\", "
                      "\"unchecked_bit_identical\": %s, \"tolerance\": %.1e, \"ok\": %s, \"step_ms_fused\": %.4f, "
                      "\"step_ms_fused_unchecked\": %.4f, \"step_ms_composite\": %.4f}",
                      rows_json.empty() ? "" : ", ", lname, num(fused.loss, "%.9g").c_str(),
                      num(ref.loss, "%.9g").c_str(), num(loss_err, "%.3e").c_str(), num(glog, "%.3e").c_str(),
                      num(gmax, "%.3e").c_str(), worst.c_str(), same ? "true" : "false", tol, ok ? "true" : "false",
                      med(tf), med(tu), med(tc));
        rows_json += buf;
    }
    if (!o.json.empty()) {
        FILE* f = std::fopen(o.json.c_str(), "w");
        if (f) {
            std::fprintf(f,
                         "{\"tool\": \"train_step\", \"device\": \"%s\", \"dtype\": \"%s\", \"torch\": \"%s\", "
                         "\"vocab\": %lld, \"hidden\": %lld, \"layers\": %lld, \"heads\": %lld, \"kv_heads\": %lld, "
                         "\"pairs\": %lld, \"length\": %lld, \"reps\": %d, \"ok\": %s, \"results\": [%s]}\n",
                         o.device.c_str(), o.dtype.c_str(), TORCH_VERSION, (long long)o.vocab, (long long)o.hidden,
                         (long long)o.layers, (long long)o.heads, (long long)o.kv_heads, (long long)o.pairs,
                         (long long)o.length, o.reps, all_ok ? "true" : "false", rows_json.c_str());
            std::fclose(f);
        }
    }
    return all_ok ? 0 : 1;
}

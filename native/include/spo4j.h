/*
 * spo4j.h: the C ABI of spo4j's kernels. The CPU kernels (native/cpu) and the CUDA
 * kernels (native/cuda) implement the same prototypes; the CUDA ones take a stream last.
 *
 * Conventions:
 *  - Argument order: inputs first, then outputs, then how to run (num_threads on the CPU,
 *    the stream for CUDA). A buffer is followed by what describes it (the logits by dtype,
 *    rows, vocab and row stride; grad_logits by its row stride); the loss parameters and
 *    the pair count come before the per-pair inputs.
 *  - Raw pointers, element counts, a row stride in ELEMENTS (>= vocab) and flags.
 *  - Every entry point returns an spo4j_status; 0 is success. On failure a message for the
 *    calling thread is available from spo4j_last_error() until that thread's next call.
 *    No C++ exception, abort() or exit() ever leaves these functions.
 *  - Inputs are validated BEFORE any output is written: a failed call leaves every output
 *    buffer (and an in-place gradient's logits) untouched. Exceptions: the CUDA forward
 *    checks its targets during its one pass, and a forward row with no finite logit is only
 *    found during its pass, so after SPO4J_ERR_TARGET from the CUDA forward or
 *    SPO4J_ERR_NONFINITE from any forward the (freshly allocated) outputs hold unspecified
 *    values. The logits are never written by a forward.
 *  - The CPU forward reports a row whose lse is not finite: all logits -inf, or a NaN or
 *    +inf logit (the message names the row, target and first such column). The CUDA forward
 *    reports only all -inf rows (NaN propagates there, as in LibTorch). The backwards take
 *    the forward's lse: -inf is an error, NaN propagates.
 *  - Accumulation is always fp32 (or wider); logits may be fp32, bf16 or fp16.
 *  - Formulas: src/site/markdown/LOSSES.md in this repository (the loss definitions).
 */
#ifndef SPO4J_H
#define SPO4J_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define SPO4J_API __declspec(dllexport)
#else
#define SPO4J_API __attribute__((visibility("default")))
#endif

typedef enum {
    SPO4J_F32 = 0,
    SPO4J_BF16 = 1,
    SPO4J_F16 = 2
} spo4j_dtype;

/* The conventional ignore_index: the label that marks a position with no loss (prompt and
 * padding tokens) in Hugging Face and PyTorch (torch.nn.CrossEntropyLoss's default). The
 * token log-prob entry points take ignore_index as an argument; this is the usual value. */
enum { SPO4J_IGNORE_INDEX = -100 };

typedef enum {
    SPO4J_OK = 0,
    SPO4J_ERR_ARGUMENT = 1,   /* bad size, stride, dtype, null pointer, loss parameter */
    SPO4J_ERR_TARGET = 2,     /* a target outside [0, vocab) that is not ignore_index */
    SPO4J_ERR_NONFINITE = 3,  /* a non-ignored row with no finite logit (every logit -inf, lse = -inf);
                                 the CPU forward also reports a NaN or +inf logit (its message says which) */
    SPO4J_ERR_CUDA = 4,       /* a CUDA runtime error (message has the CUDA error string) */
    SPO4J_ERR_NOT_BUILT = 5,  /* this library was built without CUDA */
    SPO4J_ERR_INTERNAL = 6
} spo4j_status;

typedef enum {
    SPO4J_LOSS_SPO = 0,      /* (beta*h - m)^2, m per pair or m0 */
    SPO4J_LOSS_DPO = 1,      /* -(1-eps) logsig(beta h) - eps logsig(-beta h) */
    SPO4J_LOSS_IPO = 2,      /* (h - 1/(2 beta))^2 */
    SPO4J_LOSS_HINGE = 3,    /* max(0, 1 - beta h) */
    SPO4J_LOSS_SOFT_DPO = 4, /* -p logsig(beta h) - (1-p) logsig(-beta h), p = sigmoid(m) */
    SPO4J_LOSS_SPO_EXP = 5,  /* f(beta h / m~) with f(z) = 1/e - z e^-z: minimum 0 at beta h = m~ */
    /* TRL's DPOTrainer loss types (src/site/markdown/LOSSES.md names the TRL source read) */
    SPO4J_LOSS_ROBUST = 6,    /* (-(1-eps) logsig(beta h) + eps logsig(-beta h)) / (1 - 2 eps) */
    SPO4J_LOSS_EXO_PAIR = 7,  /* KL(Bern(sig(beta h)) || Bern(1-eps')), eps' = eps or 1e-3 when eps = 0 */
    SPO4J_LOSS_NCA_PAIR = 8,  /* -logsig(beta dc) - logsig(-beta dc)/2 - logsig(-beta dr)/2 */
    SPO4J_LOSS_BCO_PAIR = 9,  /* -logsig(beta dc - delta) - logsig(-(beta dr - delta)), delta: running mean reward */
    SPO4J_LOSS_SPPO_HARD = 10, /* (dc - 1/(2 beta))^2 + (dr + 1/(2 beta))^2 */
    SPO4J_LOSS_AOT = 11,      /* the dpo formula; the caller passes log-ratios sorted across the batch */
    SPO4J_LOSS_AOT_PAIR = 12, /* the dpo formula; the caller passes dc and dr each sorted across the batch */
    SPO4J_LOSS_APO_ZERO = 13, /* 1 - sig(beta dc) + sig(beta dr) */
    SPO4J_LOSS_APO_DOWN = 14, /* sig(beta dc) + 1 - sig(beta h) */
    SPO4J_LOSS_DISCOPOP = 15, /* -logsig(beta h) (1 - w) + exp(-beta h) w, w = sig(beta h / tau) */
    SPO4J_LOSS_SIMPO = 16,    /* -(1-eps) logsig(beta h - gamma) - eps logsig(-(beta h - gamma)), no reference */
    SPO4J_LOSS_CPO = 17       /* the dpo formula, no reference (ref log-probs 0) */
} spo4j_loss_type;

typedef struct {
    int32_t type;            /* spo4j_loss_type */
    float beta;              /* > 0, finite */
    float label_smoothing;   /* eps in [0, 0.5): dpo, robust, exo-pair, aot, aot-pair, simpo, cpo */
    float margin;            /* m0, used when the per-pair margin pointer is NULL (spo, soft-dpo, spo-exp) */
    float margin_floor;      /* spo-exp only: |m| is raised to at least this (> 0, finite): m~ */
    float tau;               /* discopop only: the temperature (> 0, finite; TRL's default 0.05) */
    float gamma;             /* simpo only: the target reward margin (finite; TRL's default 0.5) */
    float delta;             /* bco-pair only: the reward shift, the running mean reward (finite) */
} spo4j_loss_params;

/* Layout of the stats[] output of the preference loss (batch means). */
enum {
    SPO4J_STAT_LOSS = 0,             /* mean per-pair loss */
    SPO4J_STAT_REWARD_CHOSEN = 1,    /* mean beta*dc */
    SPO4J_STAT_REWARD_REJECTED = 2,  /* mean beta*dr */
    SPO4J_STAT_REWARD_MARGIN = 3,    /* mean beta*h */
    SPO4J_STAT_ACCURACY = 4,         /* mean 1[beta*dc > beta*dr] */
    SPO4J_STAT_LOGP_CHOSEN = 5,      /* mean policy_chosen */
    SPO4J_STAT_LOGP_REJECTED = 6,    /* mean policy_rejected */
    SPO4J_STAT_COUNT = 7
};

/* ---- token log-probs: fused log-softmax + gather -------------------------------------
 * For row r with logits z (vocab entries at logits + r*row_stride) and target t:
 *   lse[r] = log sum_v exp(z_v), logp[r] = z_t - lse[r],
 *   entropy[r] = lse[r] - sum_v softmax(z)_v z_v          (only when entropy != NULL)
 * Rows with t == ignore_index give logp = lse = entropy = 0.
 * num_threads <= 0 means 1 on the CPU; ignored by CUDA. */
SPO4J_API int spo4j_token_logprobs_fwd_cpu(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index,
        float* logp, float* lse, float* entropy /* nullable */, int32_t num_threads);

/* Backward with upstream g = grad_logp[r]:
 *   grad_logits[r, v] = g * (1[v == t] - exp(z_v - lse[r])), written in the logits' dtype
 * with row stride grad_row_stride. grad_logits may alias logits (then the strides must be
 * equal): the gradient overwrites the logits in place. Ignored rows get zeros. */
SPO4J_API int spo4j_token_logprobs_bwd_cpu(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index,
        const float* lse, const float* grad_logp,
        void* grad_logits, int64_t grad_row_stride, int32_t num_threads);

/* The backward over the vocabulary columns [vocab_offset, vocab_offset + vocab) of rows of
 * full_vocab entries (the fused LM head's tiles: logits of a slice of the head): logits,
 * row_stride and grad_logits describe the slice only; targets are ids in [0, full_vocab) (or
 * ignore_index); lse is the whole row's. Every column gets -g * exp(z_v - lse[r]), and, when
 * one_hot != 0, the column of the target (if the slice holds it) g * (1 - exp(z_t - lse[r]))
 * as in the whole-row backward. With one_hot == 0 the caller adds the one-hot term g * 1[v == t]
 * itself (the fused head adds its products to dL/dh and dL/dW in fp32). Same aliasing and
 * statuses as above. */
SPO4J_API int spo4j_token_logprobs_bwd_slice_cpu(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index, int64_t vocab_offset, int64_t full_vocab,
        int32_t one_hot, const float* lse, const float* grad_logp,
        void* grad_logits, int64_t grad_row_stride, int32_t num_threads);

/* dst[i] += (float)src[i] for i in [0, n): an fp32 accumulator and an f32/bf16/f16 source,
 * both contiguous (the fused LM head's bf16/fp16 gradient products into fp32). One rounding per
 * element, as dst + float(src). num_threads <= 0 means 1. */
SPO4J_API int spo4j_add_widened_cpu(float* dst, const void* src, int32_t dtype, int64_t n,
                                    int32_t num_threads);

/* ---- preference losses ----------------------------------------------------------------
 * Inputs per pair i (already summed or length-normalised log-probs): policy_chosen,
 * policy_rejected, ref_chosen, ref_rejected; margin[i] (SPO target; NULL -> p->margin).
 * Outputs: loss[i] per-pair loss (nullable), grad_chosen[i] = dMEAN/d policy_chosen[i],
 * grad_rejected[i] = dMEAN/d policy_rejected[i] (both already divided by pairs),
 * stats[SPO4J_STAT_COUNT] batch means (nullable). */
SPO4J_API int spo4j_preference_loss_cpu(
        const spo4j_loss_params* p, int64_t pairs,
        const float* policy_chosen, const float* policy_rejected,
        const float* ref_chosen, const float* ref_rejected, const float* margin /* nullable */,
        float* loss /* nullable */, float* grad_chosen, float* grad_rejected,
        float* stats /* nullable */);

/* ---- CUDA twins: all pointers are device pointers (p and the status are host-side);
 * stream is a cudaStream_t (NULL = legacy default stream). Built as stubs returning
 * SPO4J_ERR_NOT_BUILT without nvcc.
 * The token log-prob entry points come in two kinds:
 *  - checked (spo4j_token_logprobs_{fwd,bwd}_cuda): the CPU kernels' contract, statuses
 *    included. To report a bad target or a row with no finite logit they read a device flag
 *    back: each call synchronises its stream before it returns (a 16-byte memset, for the
 *    backward a pre-pass kernel, a 16-byte copy to pinned memory, cudaStreamSynchronize).
 *  - unchecked (..._cuda_unchecked), for callers that have validated their targets already
 *    (e.g. against the vocabulary when a batch is collated): the same arguments, the same
 *    argument checks on the host, and then only the kernel launch: no synchronisation, no
 *    copy, no memset, no allocation, so the call returns once the kernel is queued and can be
 *    captured into a CUDA graph (while the stream captures, the pointer-attribute checks are
 *    skipped and the current device is used). Data errors are not reported: a target outside
 *    [0, vocab) that is not ignore_index is never dereferenced, its row gets logp = NaN
 *    (forward) or a NaN gradient row (backward); a row with no finite logit gets lse = -inf
 *    and logp NaN (forward) and non-finite gradients (backward).
 * spo4j_preference_loss_cuda never synchronises. */
SPO4J_API int spo4j_token_logprobs_fwd_cuda(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index,
        float* logp, float* lse, float* entropy, void* stream);
SPO4J_API int spo4j_token_logprobs_bwd_cuda(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index,
        const float* lse, const float* grad_logp,
        void* grad_logits, int64_t grad_row_stride, void* stream);
SPO4J_API int spo4j_token_logprobs_fwd_cuda_unchecked(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index,
        float* logp, float* lse, float* entropy, void* stream);
SPO4J_API int spo4j_token_logprobs_bwd_cuda_unchecked(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index,
        const float* lse, const float* grad_logp,
        void* grad_logits, int64_t grad_row_stride, void* stream);
SPO4J_API int spo4j_preference_loss_cuda(
        const spo4j_loss_params* p, int64_t pairs,
        const float* policy_chosen, const float* policy_rejected,
        const float* ref_chosen, const float* ref_rejected, const float* margin,
        float* loss, float* grad_chosen, float* grad_rejected, float* stats, void* stream);

/* 1 when the CUDA kernels were compiled in, else 0. */
SPO4J_API int spo4j_cuda_built(void);
/* Number of CUDA devices visible (0 when not built or no driver/GPU); never fails. */
SPO4J_API int spo4j_cuda_device_count(void);

/* The calling thread's message for its last failed call ("" if none). */
SPO4J_API const char* spo4j_last_error(void);

/* Fault injection for tests: after `after` more successful thread starts, the CPU kernels'
 * thread starts fail as if the OS refused them (the kernels then run that work on the calling
 * thread); a negative value switches it off. Returns how many starts were refused since the
 * previous call. */
SPO4J_API int spo4j_debug_fail_thread_starts(int32_t after);

/* Test and benchmark switch for the CPU token log-prob kernels: 0 = automatic (the AVX-512
 * path with its own exp when the CPU has x86-64-v4, else the generic path), 1 = force the
 * generic path (per-ISA clones with the generic exp, as on a CPU without AVX-512); any
 * other value only asks. Returns the path now in effect: 1 generic, 2 AVX-512. The
 * environment variable SPO4J_CPU_PATH=generic, read at the first kernel call, does the same
 * as 1. Not for concurrent use with running kernels (each call reads the path once). */
SPO4J_API int spo4j_debug_cpu_path(int32_t request);

/* Test hook: y[i] = exp(x[i]) with the vector exp of CPU path `path` (1 generic: the exp of
 * the per-ISA clones; 2 AVX-512), for the harness's direct comparison with std::exp; and
 * y[i] = 2^x[i] with the AVX-512 path's base-2 exps: 3 the forward's (degree 5, no clamp),
 * 4 the half-precision gradients' (degree 4 in f = u - floor(u), no clamp, scale 1).
 * Returns SPO4J_ERR_NOT_BUILT when that path is not available on this CPU. */
SPO4J_API int spo4j_debug_cpu_exp(const float* x, float* y, int64_t n, int32_t path);

/* Sets the environment variable `name` to `value` unless it is already set (for
 * OMP_WAIT_POLICY, before LibTorch's OpenMP runtime initialises). Returns 1 when it set it,
 * 0 when it was already set, -1 on a null/empty name or a failed setenv. */
SPO4J_API int spo4j_set_env_default(const char* name, const char* value);

#ifdef __cplusplus
}
#endif

#endif /* SPO4J_H */

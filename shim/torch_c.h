/*
 * torch_c.h - a small C API over libtorch ("torch-c").
 *
 * Generic and tensor-level: the shim knows nothing of U-Nets. The network, its
 * trainer and its inference are written in C on top of these calls (model/).
 *
 * Conventions
 *  - Opaque handles: tc_tensor, tc_scope, tc_optim, tc_module.
 *  - Functions that are not ops return a tc_status (TC_OK = 0). On failure the
 *    thread-local message tc_last_error() says why. No C++ exception ever
 *    crosses this boundary.
 *  - Ops (tc_conv3d, tc_add, ...) return a new tensor owned by the scope `s`
 *    given as first argument, or NULL on failure (tc_last_error() says why).
 *    Every op returns NULL at once when one of its tensor inputs is NULL, so a
 *    chain of ops may be written without checks and tested once at the end:
 *
 *        tc_tensor *y = tc_leaky_relu(s, tc_conv3d(s, x, w, b, 1, 1), 0.01);
 *        if (y == NULL) { fprintf(stderr, "%s\n", tc_last_error()); ... }
 *
 *  - A scope (arena) owns every tensor created in it; tc_scope_reset() frees
 *    them all at once (one train step, one forward). Long-lived tensors
 *    (parameters) are created with scope NULL and freed with tc_tensor_free().
 *  - Shapes are int64_t arrays; data crosses the boundary as caller-owned
 *    float / uint8_t buffers in C (row-major, contiguous) order; the shim copies.
 *  - Devices are strings: "cpu", "cuda", "cuda:N". A CUDA device on a build or
 *    machine without CUDA is a clear error (TC_ENODEV), never a crash.
 *
 * Example (one forward + backward):
 *
 *     tc_set_threads(2);
 *     tc_scope *s = tc_scope_create();
 *     int64_t xs[5] = {1, 4, 32, 32, 32};
 *     tc_tensor *x = tc_from_float(s, buf, xs, 5, "cpu");
 *     tc_tensor *loss = tc_mean(s, tc_conv3d(s, x, w, NULL, 1, 1));
 *     if (loss == NULL || tc_backward(loss) != TC_OK) ...
 *     tc_scope_reset(s);
 */
#ifndef FEDSEG_TORCH_C_H
#define FEDSEG_TORCH_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
	TC_OK = 0,
	TC_EINVAL = 1,  /* bad argument (shape, NULL, out of range) */
	TC_ETORCH = 2,  /* libtorch raised an error; see tc_last_error() */
	TC_ENOMEM = 3,  /* allocation failed */
	TC_ENODEV = 4,  /* device not available (e.g. CUDA on a CPU build) */
	TC_EIO = 5,     /* file could not be read or written */
} tc_status;

typedef struct tc_tensor tc_tensor;
typedef struct tc_scope tc_scope;
typedef struct tc_optim tc_optim;
typedef struct tc_module tc_module;

#define TC_MAX_DIMS 8

/* --- errors, threads, devices ------------------------------------------ */

/* Message of the last failure on this thread ("" if none). Borrowed; valid
 * until the next shim call on this thread. */
const char *tc_last_error(void);
/* Static text for a status code. */
const char *tc_strerror(tc_status st);

/* Sets libtorch's intra-op thread count (n >= 1). libtorch here defaults to 1. */
tc_status tc_set_threads(int n);
int tc_get_threads(void);

/* Checks a device string ("cpu", "cuda", "cuda:N"). TC_EINVAL if malformed,
 * TC_ENODEV if it names a CUDA device that this build/machine lacks. */
tc_status tc_device_check(const char *dev);
/* 1 if libtorch has CUDA and at least one device, else 0. */
int tc_cuda_available(void);
int tc_cuda_device_count(void);
/* Version string of the libtorch the shim was built against (static). */
const char *tc_torch_version(void);

/* Seeds libtorch's random generators (CPU and CUDA). */
void tc_manual_seed(uint64_t seed);

/* Enables or disables autograd recording on this thread; returns the
 * previous setting (1 = enabled). Use 0 around inference. */
int tc_set_grad_enabled(int enabled);

/* Mixed precision (libtorch autocast) on this thread, for inference. Between
 * tc_autocast_begin and tc_autocast_end, ops on tensors of dev's type run
 * as libtorch's autocast lists say: convolutions in dtype, precision-
 * sensitive ops in float32; others keep their input's type. Results may
 * then be float16/bfloat16: tc_to_float converts, tc_float casts. dtype:
 * "bf16" (CPU and CUDA) or "fp16" (CUDA only; TC_EINVAL on "cpu"). dev as
 * in tc_device_check (TC_ENODEV without CUDA). Regions do not nest
 * (TC_EINVAL). tc_autocast_end restores the previous state and frees the
 * cached low-precision copies of the parameters; TC_EINVAL if none open. */
tc_status tc_autocast_begin(const char *dev, const char *dtype);
tc_status tc_autocast_end(void);
/* 1 while a tc_autocast_begin region is open on this thread. */
int tc_autocast_active(void);
/* Element type of t: "float32", "float16", "bfloat16", "float64", "int64",
 * "int32", "uint8", "bool" or "other"; "" for NULL (static strings). */
const char *tc_dtype(const tc_tensor *t);

/* --- scopes (arenas) ---------------------------------------------------- */

/* Creates an empty scope. Free with tc_scope_destroy. NULL on ENOMEM. */
tc_scope *tc_scope_create(void);
/* Frees every tensor created in the scope; the scope stays usable. */
void tc_scope_reset(tc_scope *s);
/* Frees all tensors and the scope itself. NULL is accepted. */
void tc_scope_destroy(tc_scope *s);
/* Frees one scope-owned tensor now (inference frees intermediates as it
 * goes, to bound memory). t must not be used afterwards. */
void tc_scope_drop(tc_scope *s, tc_tensor *t);
/* Number of live tensors owned by the scope (for tests and leak checks). */
size_t tc_scope_size(const tc_scope *s);

/* --- tensors: creation, data, properties -------------------------------- */

/* New float32 tensor holding a copy of `data` (numel = product of shape)
 * on device `dev`. `s` may be NULL: then the caller owns the tensor and
 * frees it with tc_tensor_free. */
tc_tensor *tc_from_float(tc_scope *s, const float *data, const int64_t *shape,
    int ndim, const char *dev);
/* New int64 tensor (class indices) from uint8 labels. */
tc_tensor *tc_from_u8_as_long(tc_scope *s, const uint8_t *data,
    const int64_t *shape, int ndim, const char *dev);
/* New float32 tensor filled with zeros / ones / N(0, std^2). */
tc_tensor *tc_zeros(tc_scope *s, const int64_t *shape, int ndim, const char *dev);
tc_tensor *tc_full(tc_scope *s, const int64_t *shape, int ndim, float value,
    const char *dev);
tc_tensor *tc_randn(tc_scope *s, const int64_t *shape, int ndim, float std,
    const char *dev);

/* Frees a tensor created with scope NULL. NULL is accepted. Must not be
 * called on a scope-owned tensor. */
void tc_tensor_free(tc_tensor *t);

/* Copies the tensor's values (converted to float32, moved to CPU) into
 * `out`, which holds `n` floats; TC_EINVAL unless n == numel. */
tc_status tc_to_float(const tc_tensor *t, float *out, size_t n);
/* Same, for tensors of integer or bool type (e.g. argmax), as uint8. Values
 * outside 0..255 are an error. */
tc_status tc_to_u8(const tc_tensor *t, uint8_t *out, size_t n);
/* Overwrites the values of `t` in place (no autograd record) from `data`
 * (n == numel). Used to load weights into parameters. */
tc_status tc_copy_from_float(tc_tensor *t, const float *data, size_t n);
/* Value of a one-element tensor as double; NaN on error. */
double tc_item(const tc_tensor *t);

int tc_ndim(const tc_tensor *t);
/* Size of dimension d (negative d counts from the end); -1 on error. */
int64_t tc_size(const tc_tensor *t, int d);
int64_t tc_numel(const tc_tensor *t);
/* Copies the shape into shape[TC_MAX_DIMS]; returns ndim or -1. */
int tc_shape(const tc_tensor *t, int64_t *shape);

/* Marks a tensor as a parameter (requires grad). */
tc_status tc_set_requires_grad(tc_tensor *t, int on);
/* Gradient of a parameter after tc_backward, as a new tensor in `s`
 * (zeros if no gradient yet). */
tc_tensor *tc_grad(tc_scope *s, const tc_tensor *t);
/* Moves a caller-owned tensor to `dev` in place (keeps requires_grad). */
tc_status tc_to_device(tc_tensor *t, const char *dev);
/* A copy of `t` on `dev`, owned by `s`. */
tc_tensor *tc_to(tc_scope *s, const tc_tensor *t, const char *dev);
/* Converts to float16 / back to float32 (mixed-precision inference). */
tc_tensor *tc_half(tc_scope *s, const tc_tensor *t);
tc_tensor *tc_float(tc_scope *s, const tc_tensor *t);

/* --- ops (all return a scope-owned tensor or NULL) ---------------------- */

/* x: [N,Cin,D,H,W]; w: [Cout,Cin,k,k,k]; b: [Cout] or NULL. Cubic kernel,
 * same stride and zero padding on all three axes. */
tc_tensor *tc_conv3d(tc_scope *s, const tc_tensor *x, const tc_tensor *w,
    const tc_tensor *b, int stride, int padding);
/* x: [N,Cin,D,H,W]; w: [Cin,Cout,k,k,k] (PyTorch layout); b: [Cout] or NULL. */
tc_tensor *tc_conv_transpose3d(tc_scope *s, const tc_tensor *x,
    const tc_tensor *w, const tc_tensor *b, int stride, int padding);
/* Instance norm over D,H,W per sample and channel; gamma/beta: [C] or NULL
 * (affine off). */
tc_tensor *tc_instance_norm(tc_scope *s, const tc_tensor *x,
    const tc_tensor *gamma, const tc_tensor *beta, double eps);
tc_tensor *tc_leaky_relu(tc_scope *s, const tc_tensor *x, double slope);
/* leaky_relu(instance_norm(x, gamma, beta, eps), slope), fused. x is
 * CONSUMED: when no gradient is recorded (grad mode off) and x is a
 * contiguous float32 or bfloat16 (autocast) CPU tensor with float32
 * gamma/beta, x is normalised in place (statistics in float/double; bf16
 * rounded once on the store) in two passes over
 * memory and returned itself (no new tensor); otherwise the result is a new
 * tensor in s (instance_norm + in-place leaky ReLU, autograd-safe) and x
 * is left as it was. Either way use only the result afterwards. */
tc_tensor *tc_instance_norm_lrelu(tc_scope *s, tc_tensor *x,
    const tc_tensor *gamma, const tc_tensor *beta, double eps, double slope);
/* In place: x = leaky_relu(x); returns x (no new tensor). Autograd-safe
 * after ops that do not need their output for backward (conv, norm). */
tc_tensor *tc_leaky_relu_inplace(tc_tensor *x, double slope);
tc_tensor *tc_relu(tc_scope *s, const tc_tensor *x);
tc_tensor *tc_sigmoid(tc_scope *s, const tc_tensor *x);
tc_tensor *tc_max_pool3d(tc_scope *s, const tc_tensor *x, int kernel, int stride);
/* Trilinear upsampling by an integer factor (align_corners = false). */
tc_tensor *tc_upsample3d(tc_scope *s, const tc_tensor *x, int factor);
/* Concatenation of n tensors along dim. */
tc_tensor *tc_cat(tc_scope *s, tc_tensor *const *ts, int n, int dim);
tc_tensor *tc_softmax(tc_scope *s, const tc_tensor *x, int dim);
tc_tensor *tc_log_softmax(tc_scope *s, const tc_tensor *x, int dim);
/* Mean cross-entropy of logits [N,C,...] against int64 targets [N,...]. */
tc_tensor *tc_cross_entropy(tc_scope *s, const tc_tensor *logits,
    const tc_tensor *target);
/* One-hot of int64 targets [N,...] as float [N,C,...] (channel dim 1). */
tc_tensor *tc_one_hot(tc_scope *s, const tc_tensor *target, int num_classes);

tc_tensor *tc_add(tc_scope *s, const tc_tensor *a, const tc_tensor *b);
tc_tensor *tc_sub(tc_scope *s, const tc_tensor *a, const tc_tensor *b);
tc_tensor *tc_mul(tc_scope *s, const tc_tensor *a, const tc_tensor *b);
tc_tensor *tc_div(tc_scope *s, const tc_tensor *a, const tc_tensor *b);
tc_tensor *tc_add_scalar(tc_scope *s, const tc_tensor *a, double v);
tc_tensor *tc_mul_scalar(tc_scope *s, const tc_tensor *a, double v);
/* Mean / sum of all elements (a 0-d tensor). */
tc_tensor *tc_mean(tc_scope *s, const tc_tensor *x);
tc_tensor *tc_sum(tc_scope *s, const tc_tensor *x);
/* Sum over the listed dims (ndims of them). */
tc_tensor *tc_sum_dims(tc_scope *s, const tc_tensor *x, const int64_t *dims,
    int ndims, int keepdim);
/* Index of the maximum along dim, as int64. */
tc_tensor *tc_argmax(tc_scope *s, const tc_tensor *x, int dim);
/* Reverses the listed dims. */
tc_tensor *tc_flip(tc_scope *s, const tc_tensor *x, const int64_t *dims, int ndims);
/* x[..., start:start+length, ...] along dim (a view copy in `s`). */
tc_tensor *tc_narrow(tc_scope *s, const tc_tensor *x, int dim, int64_t start,
    int64_t length);
/* Reshape (numel must match). */
tc_tensor *tc_reshape(tc_scope *s, const tc_tensor *x, const int64_t *shape, int ndim);
/* Stops gradient flow. */
tc_tensor *tc_detach(tc_scope *s, const tc_tensor *x);

/* --- autograd ----------------------------------------------------------- */

/* Back-propagates from a one-element tensor into every parameter that
 * contributed. Gradients accumulate until the optimiser's zero_grad. */
tc_status tc_backward(tc_tensor *loss);

/* --- optimisers --------------------------------------------------------- */

/* Adam over the n parameter tensors (borrowed: they must outlive the
 * optimiser). weight_decay is L2 (torch.optim.Adam semantics). */
tc_optim *tc_adam_create(tc_tensor *const *params, int n, double lr,
    double beta1, double beta2, double eps, double weight_decay);
/* SGD with momentum (0 = plain). */
tc_optim *tc_sgd_create(tc_tensor *const *params, int n, double lr,
    double momentum, double weight_decay);
void tc_optim_destroy(tc_optim *o);
tc_status tc_optim_zero_grad(tc_optim *o);
tc_status tc_optim_step(tc_optim *o);
tc_status tc_optim_set_lr(tc_optim *o, double lr);
/* Saves / loads the optimiser state (moments, step counts) to a file.
 * Loading requires the same parameter list (count and shapes). */
tc_status tc_optim_save(const tc_optim *o, const char *path);
tc_status tc_optim_load(tc_optim *o, const char *path);

/* --- TorchScript modules (user-supplied models) -------------------------- */

/* Loads a TorchScript file onto dev. NULL on error. */
tc_module *tc_module_load(const char *path, const char *dev);
void tc_module_destroy(tc_module *m);
/* Runs forward(x) in eval mode; the output tensor is owned by s. */
tc_tensor *tc_module_forward(tc_scope *s, tc_module *m, const tc_tensor *x);

#ifdef __cplusplus
}
#endif
#endif /* FEDSEG_TORCH_C_H */

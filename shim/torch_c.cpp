// torch_c.cpp - implementation of the C API in torch_c.h over libtorch.
//
// Every extern "C" entry point catches every exception (c10::Error,
// std::bad_alloc, std::exception, anything else) and turns it into a status
// code or a NULL return plus a thread-local message. Only API present in both
// libtorch 1.13 and 2.x is used (see docs/shim.md).

#include "torch_c.h"

#include <torch/script.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <algorithm>
#include <cstdlib>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <c10/core/CPUAllocator.h>
#include <unistd.h>
#include <sys/mman.h>
#include <malloc.h>
#include <climits>
#include <vector>

struct tc_tensor {
	torch::Tensor t;
};

struct tc_scope {
	std::vector<tc_tensor *> owned;
};

namespace {

enum class OptKind { Adam, SGD };

}  // namespace

struct tc_optim {
	OptKind kind;
	std::vector<torch::Tensor> params;  // share TensorImpl with the caller's tensors
	std::unique_ptr<torch::optim::Optimizer> opt;
};

struct tc_module {
	torch::jit::Module mod;
	c10::Device dev{c10::kCPU};
};

namespace {

// A caching CPU allocator. Large tensors (a full-brain activation is
// 100+ MB) are above glibc's mmap threshold, so every allocation was a
// fresh mmap whose pages the kernel had to zero on first touch: measured,
// 46% of a full-case inference went to clear_page in the kernel. Freed
// blocks are kept per exact size and handed out again (shapes repeat across
// windows and training steps), up to a cap (FEDSEG_CPU_CACHE_MB, default
// 4096; 0 turns caching off).
class CachingCPUAllocator final : public c10::Allocator {
public:
	c10::DataPtr allocate(size_t n) const override
	{
		void *p = take(n);
		if (p == nullptr) {
			// Large blocks: 2 MiB aligned and marked for transparent
			// huge pages, so first touch faults once per 2 MiB, not
			// once per 4 KiB.
			size_t align = n >= (8u << 20) ? (2u << 20) : 64;
			if (posix_memalign(&p, align, n ? n : 64) != 0)
				throw std::bad_alloc();
			if (align > 64)
				madvise(p, n, MADV_HUGEPAGE);
			std::lock_guard<std::mutex> lk(mu());
			sizes()[p] = n;
		}
		return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
	}
	c10::DeleterFnPtr raw_deleter() const override { return &release; }
	// Pure virtual in libtorch 2.x; a plain member in 1.13.
	void copy_data(void *dst, const void *src, std::size_t n) const
	{
		std::memcpy(dst, src, n);
	}

private:
	static std::mutex &mu() { static std::mutex m; return m; }
	static std::unordered_map<void *, size_t> &sizes()
	{
		static auto *m = new std::unordered_map<void *, size_t>();
		return *m;
	}
	static std::unordered_map<size_t, std::vector<void *>> &pool()
	{
		static auto *m = new std::unordered_map<size_t, std::vector<void *>>();
		return *m;
	}
	static size_t &cached() { static size_t c = 0; return c; }
	static size_t cap()
	{
		static size_t c = [] {
			const char *e = getenv("FEDSEG_CPU_CACHE_MB");
			long mb = e ? atol(e) : 4096;
			return (size_t)(mb < 0 ? 0 : mb) << 20;
		}();
		return c;
	}
	static void *take(size_t n)
	{
		std::lock_guard<std::mutex> lk(mu());
		auto it = pool().find(n);
		if (it == pool().end() || it->second.empty())
			return nullptr;
		void *p = it->second.back();
		it->second.pop_back();
		cached() -= n;
		return p;
	}
	static void release(void *p)
	{
		if (p == nullptr)
			return;
		std::lock_guard<std::mutex> lk(mu());
		auto it = sizes().find(p);
		size_t n = it == sizes().end() ? 0 : it->second;
		if (it != sizes().end() && cached() + n <= cap()) {
			pool()[n].push_back(p);
			cached() += n;
			return;
		}
		if (it != sizes().end())
			sizes().erase(it);
		free(p);
	}
};

CachingCPUAllocator g_cpu_alloc;

// Installed before main(): libc10 registers its default allocator with
// priority 0 during its own (earlier) static initialisation.
struct AllocatorInstall {
	AllocatorInstall()
	{
		const char *e = getenv("FEDSEG_CPU_CACHE_MB");
		if (e == nullptr || atol(e) > 0) {
			c10::SetCPUAllocator(&g_cpu_alloc, 1);
			// Memory libtorch does not take from the allocator above
			// (oneDNN's reorder buffers and scratchpads, OpenBLAS
			// work areas, our own sliding-window buffers) came from
			// glibc as a fresh mmap per call when large, i.e. zeroed
			// pages on every touch: measured 64k page faults per
			// full-case inference. Serve them from the heap and keep
			// freed memory instead of returning it to the kernel.
			mallopt(M_MMAP_MAX, 0);
			mallopt(M_TRIM_THRESHOLD, INT_MAX);
		}
	}
} g_alloc_install;

}  // namespace

namespace {

thread_local std::string g_err;

// Stores "where: msg" as a single line (newlines folded, length capped).
void set_err(const char *where, const std::string &msg)
{
	std::string out;
	out.reserve(msg.size() + 32);
	out += where;
	out += ": ";
	bool space = false;
	for (char c : msg) {
		if (c == '\n' || c == '\r' || c == '\t') {
			space = true;
			continue;
		}
		if (space && !out.empty() && out.back() != ' ')
			out += ' ';
		space = false;
		out += c;
		if (out.size() > 600) {
			out += "...";
			break;
		}
	}
	while (!out.empty() && out.back() == ' ')
		out.pop_back();
	try {
		g_err = std::move(out);
	} catch (...) {
		// keep the old message if even this fails
	}
}

// Thrown inside entry points for argument errors we detect ourselves.
struct ShimError {
	tc_status st;
	std::string msg;
};

[[noreturn]] void fail(tc_status st, std::string msg)
{
	throw ShimError{st, std::move(msg)};
}

// Maps the exception currently being handled to a status + message.
tc_status handle_exception(const char *where)
{
	try {
		throw;
	} catch (const ShimError &e) {
		set_err(where, e.msg);
		return e.st;
	} catch (const c10::Error &e) {
		set_err(where, e.what_without_backtrace());
		return TC_ETORCH;
	} catch (const std::bad_alloc &) {
		set_err(where, "out of memory");
		return TC_ENOMEM;
	} catch (const std::exception &e) {
		set_err(where, e.what());
		return TC_ETORCH;
	} catch (...) {
		set_err(where, "unknown C++ exception");
		return TC_ETORCH;
	}
}

// A NULL tensor input: keep an earlier message (the failure that produced
// the NULL) and only say something when there is none.
void null_input(const char *where)
{
	if (g_err.empty())
		set_err(where, "NULL tensor argument");
}

tc_tensor *wrap(tc_scope *s, torch::Tensor &&t)
{
	std::unique_ptr<tc_tensor> h(new tc_tensor{std::move(t)});
	if (s != nullptr)
		s->owned.push_back(h.get());  // may throw bad_alloc: h frees
	return h.release();
}

// Parses "cpu", "cuda", "cuda:N" strictly and checks availability.
c10::Device parse_device(const char *dev)
{
	if (dev == nullptr)
		fail(TC_EINVAL, "device string is NULL");
	std::string d(dev);
	if (d == "cpu")
		return c10::Device(c10::kCPU);
	int index = 0;
	if (d == "cuda") {
		index = 0;
	} else if (d.size() > 5 && d.compare(0, 5, "cuda:") == 0) {
		std::string num = d.substr(5);
		if (num.size() > 4)
			fail(TC_EINVAL, "bad device '" + d + "'");
		for (char c : num)
			if (c < '0' || c > '9')
				fail(TC_EINVAL, "bad device '" + d +
				    "' (expected cpu, cuda or cuda:N)");
		index = std::stoi(num);
	} else {
		fail(TC_EINVAL, "bad device '" + d + "' (expected cpu, cuda or cuda:N)");
	}
	if (!torch::cuda::is_available())
		fail(TC_ENODEV, "device cuda:" + std::to_string(index) +
		    " requested but this libtorch has no CUDA (or no GPU is visible)");
	int64_t count = static_cast<int64_t>(torch::cuda::device_count());
	if (index >= count)
		fail(TC_ENODEV, "device cuda:" + std::to_string(index) +
		    " requested but only " + std::to_string(count) + " CUDA device(s)");
	return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

std::vector<int64_t> make_shape(const int64_t *shape, int ndim)
{
	if (ndim < 0 || ndim > TC_MAX_DIMS)
		fail(TC_EINVAL, "ndim " + std::to_string(ndim) + " out of range 0.." +
		    std::to_string(TC_MAX_DIMS));
	if (ndim > 0 && shape == nullptr)
		fail(TC_EINVAL, "shape is NULL");
	std::vector<int64_t> v(shape, shape + ndim);
	for (int i = 0; i < ndim; i++)
		if (v[i] < 0)
			fail(TC_EINVAL, "negative size " + std::to_string(v[i]) +
			    " in dimension " + std::to_string(i));
	return v;
}

int64_t shape_numel(const std::vector<int64_t> &v)
{
	int64_t n = 1;
	for (int64_t d : v)
		n *= d;
	return n;
}

torch::TensorOptions float_opts(const c10::Device &d)
{
	return torch::TensorOptions().dtype(torch::kFloat32).device(d);
}

std::string shape_str(const torch::Tensor &t)
{
	std::string s = "[";
	for (int64_t i = 0; i < t.dim(); i++) {
		if (i)
			s += ", ";
		s += std::to_string(t.size(i));
	}
	return s + "]";
}

// Makes a CPU contiguous tensor of dtype `dt` from t, without autograd.
torch::Tensor host_contiguous(const torch::Tensor &t, c10::ScalarType dt)
{
	torch::Tensor h = t.detach();
	if (h.device().type() != c10::kCPU || h.scalar_type() != dt)
		h = h.to(torch::TensorOptions().device(c10::kCPU).dtype(dt));
	return h.contiguous();
}

// Runs an op body: NULL-propagation is done by the caller; exceptions map to
// NULL + message.
template <typename F>
tc_tensor *op(const char *where, tc_scope *s, F &&f)
{
	try {
		return wrap(s, f());
	} catch (...) {
		handle_exception(where);
		return nullptr;
	}
}

template <typename F>
tc_status guard(const char *where, F &&f)
{
	try {
		f();
		return TC_OK;
	} catch (...) {
		return handle_exception(where);
	}
}

std::once_flag g_interop_once;

bool file_readable(const char *path)
{
	FILE *f = std::fopen(path, "rb");
	if (f == nullptr)
		return false;
	std::fclose(f);
	return true;
}

// Writes via tmp + fsync + rename so that a crash never leaves a torn file.
void save_archive_atomic(torch::serialize::OutputArchive &ar, const std::string &path)
{
	std::string tmp = path + ".tmp." + std::to_string(static_cast<long>(getpid()));
	try {
		ar.save_to(tmp);
	} catch (...) {
		std::remove(tmp.c_str());
		fail(TC_EIO, "cannot write " + tmp);
	}
	int fd = open(tmp.c_str(), O_RDONLY);
	if (fd < 0 || fsync(fd) != 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		std::remove(tmp.c_str());
		fail(TC_EIO, "fsync " + tmp + ": " + std::strerror(e));
	}
	close(fd);
	if (std::rename(tmp.c_str(), path.c_str()) != 0) {
		int e = errno;
		std::remove(tmp.c_str());
		fail(TC_EIO, "rename " + tmp + " -> " + path + ": " + std::strerror(e));
	}
	std::string dir = ".";
	size_t slash = path.rfind('/');
	if (slash != std::string::npos)
		dir = slash == 0 ? "/" : path.substr(0, slash);
	int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(OptKind kind,
    const std::vector<torch::Tensor> &params, const torch::optim::OptimizerOptions &src)
{
	if (kind == OptKind::Adam) {
		const auto &o = static_cast<const torch::optim::AdamOptions &>(src);
		return std::unique_ptr<torch::optim::Optimizer>(
		    new torch::optim::Adam(params, o));
	}
	const auto &o = static_cast<const torch::optim::SGDOptions &>(src);
	return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::SGD(params, o));
}

// The optimiser state map is keyed by a string of the TensorImpl address in
// 1.13 and by the address itself (void *) in later 2.x releases.
template <typename Map>
auto find_state(Map &m, const torch::Tensor &p) -> decltype(m.find(typename Map::key_type()))
{
	using Key = typename Map::key_type;
	if constexpr (std::is_same<Key, std::string>::value) {
		std::ostringstream os;
		os << static_cast<const void *>(p.unsafeGetTensorImpl());
		return m.find(os.str());
	} else {
		return m.find(static_cast<Key>(p.unsafeGetTensorImpl()));
	}
}

torch::Tensor opt_tensor(const tc_tensor *t)
{
	return t == nullptr ? torch::Tensor() : t->t;
}

tc_optim *optim_create(const char *where, OptKind kind,
    tc_tensor *const *params, int n, const torch::optim::OptimizerOptions &o)
{
	try {
		if (params == nullptr || n < 1)
			fail(TC_EINVAL, "no parameters");
		std::unique_ptr<tc_optim> h(new tc_optim);
		h->kind = kind;
		for (int i = 0; i < n; i++) {
			if (params[i] == nullptr)
				fail(TC_EINVAL, "parameter " + std::to_string(i) + " is NULL");
			if (!params[i]->t.is_leaf())
				fail(TC_EINVAL, "parameter " + std::to_string(i) +
				    " is not a leaf tensor");
			h->params.push_back(params[i]->t);
		}
		h->opt = make_optimizer(kind, h->params, o);
		return h.release();
	} catch (...) {
		handle_exception(where);
		return nullptr;
	}
}


}  // namespace

extern "C" {

/* --- errors, threads, devices ------------------------------------------ */

const char *tc_last_error(void)
{
	return g_err.c_str();
}

const char *tc_strerror(tc_status st)
{
	switch (st) {
	case TC_OK: return "ok";
	case TC_EINVAL: return "invalid argument";
	case TC_ETORCH: return "libtorch error";
	case TC_ENOMEM: return "out of memory";
	case TC_ENODEV: return "device not available";
	case TC_EIO: return "i/o error";
	}
	return "unknown status";
}

tc_status tc_set_threads(int n)
{
	return guard("tc_set_threads", [&] {
		if (n < 1)
			fail(TC_EINVAL, "thread count " + std::to_string(n) + " < 1");
		at::set_num_threads(n);
		// Inter-op threads may only be set once, before any inter-op work.
		std::call_once(g_interop_once, [n] {
			try {
				at::set_num_interop_threads(n);
			} catch (...) {
			}
		});
	});
}

int tc_get_threads(void)
{
	try {
		return at::get_num_threads();
	} catch (...) {
		handle_exception("tc_get_threads");
		return -1;
	}
}

tc_status tc_device_check(const char *dev)
{
	return guard("tc_device_check", [&] { (void)parse_device(dev); });
}

int tc_cuda_available(void)
{
	try {
		return torch::cuda::is_available() ? 1 : 0;
	} catch (...) {
		handle_exception("tc_cuda_available");
		return 0;
	}
}

int tc_cuda_device_count(void)
{
	try {
		return static_cast<int>(torch::cuda::device_count());
	} catch (...) {
		handle_exception("tc_cuda_device_count");
		return 0;
	}
}

const char *tc_torch_version(void)
{
	return TORCH_VERSION;
}

void tc_manual_seed(uint64_t seed)
{
	try {
		torch::manual_seed(seed);  // CPU and, when present, all CUDA generators
	} catch (...) {
		handle_exception("tc_manual_seed");
	}
}

int tc_set_grad_enabled(int enabled)
{
	bool prev = at::GradMode::is_enabled();
	at::GradMode::set_enabled(enabled != 0);
	return prev ? 1 : 0;
}

/* --- mixed precision (autocast) ---------------------------------------- */

namespace {

// What tc_autocast_begin changed on this thread, restored by tc_autocast_end.
struct AutocastSaved {
	bool active = false;
	c10::DeviceType type = c10::kCPU;
	bool was_enabled = false;
	at::ScalarType was_dtype = at::kFloat;
};
thread_local AutocastSaved g_autocast;

// libtorch 2.4 made the autocast state per device type
// (is_autocast_enabled(kCUDA)) and deprecated the CUDA/CPU-named calls of
// 1.13; pick the form the headers have.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool ac_enabled(c10::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
void ac_set_enabled(c10::DeviceType d, bool on) { at::autocast::set_autocast_enabled(d, on); }
at::ScalarType ac_dtype(c10::DeviceType d) { return at::autocast::get_autocast_dtype(d); }
void ac_set_dtype(c10::DeviceType d, at::ScalarType t) { at::autocast::set_autocast_dtype(d, t); }
#else
bool ac_enabled(c10::DeviceType d)
{
	return d == c10::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
void ac_set_enabled(c10::DeviceType d, bool on)
{
	if (d == c10::kCUDA)
		at::autocast::set_enabled(on);
	else
		at::autocast::set_cpu_enabled(on);
}
at::ScalarType ac_dtype(c10::DeviceType d)
{
	return d == c10::kCUDA ? at::autocast::get_autocast_gpu_dtype() :
	    at::autocast::get_autocast_cpu_dtype();
}
void ac_set_dtype(c10::DeviceType d, at::ScalarType t)
{
	if (d == c10::kCUDA)
		at::autocast::set_autocast_gpu_dtype(t);
	else
		at::autocast::set_autocast_cpu_dtype(t);
}
#endif

}  // namespace

tc_status tc_autocast_begin(const char *dev, const char *dtype)
{
	return guard("tc_autocast_begin", [&] {
		c10::Device d = parse_device(dev);
		if (dtype == nullptr)
			fail(TC_EINVAL, "dtype is NULL");
		std::string n(dtype);
		at::ScalarType t;
		if (n == "fp16" || n == "float16")
			t = at::kHalf;
		else if (n == "bf16" || n == "bfloat16")
			t = at::kBFloat16;
		else
			fail(TC_EINVAL, "bad dtype '" + n + "' (expected fp16 or bf16)");
		if (t == at::kHalf && d.is_cpu())
			fail(TC_EINVAL, "fp16 autocast needs a CUDA device (libtorch's "
			    "CPU autocast runs bf16 only)");
		if (g_autocast.active)
			fail(TC_EINVAL, "an autocast region is already open on this "
			    "thread (regions do not nest)");
		AutocastSaved sv;
		sv.type = d.type();
		sv.was_enabled = ac_enabled(sv.type);
		sv.was_dtype = ac_dtype(sv.type);
		ac_set_dtype(sv.type, t);
		ac_set_enabled(sv.type, true);
		at::autocast::increment_nesting();
		sv.active = true;
		g_autocast = sv;
	});
}

tc_status tc_autocast_end(void)
{
	return guard("tc_autocast_end", [&] {
		if (!g_autocast.active)
			fail(TC_EINVAL, "no autocast region is open on this thread");
		g_autocast.active = false;
		// The cast weights cached while the region was open (fp16/bf16
		// copies of the parameters) are freed when the outermost region
		// closes, as torch.autocast's __exit__ does.
		if (at::autocast::decrement_nesting() == 0)
			at::autocast::clear_cache();
		ac_set_dtype(g_autocast.type, g_autocast.was_dtype);
		ac_set_enabled(g_autocast.type, g_autocast.was_enabled);
	});
}

int tc_autocast_active(void)
{
	return g_autocast.active ? 1 : 0;
}

const char *tc_dtype(const tc_tensor *t)
{
	if (t == nullptr || !t->t.defined())
		return "";
	switch (t->t.scalar_type()) {
	case at::kFloat: return "float32";
	case at::kHalf: return "float16";
	case at::kBFloat16: return "bfloat16";
	case at::kDouble: return "float64";
	case at::kLong: return "int64";
	case at::kInt: return "int32";
	case at::kByte: return "uint8";
	case at::kBool: return "bool";
	default: return "other";
	}
}

/* --- scopes ------------------------------------------------------------- */

tc_scope *tc_scope_create(void)
{
	try {
		tc_scope *s = new tc_scope;
		s->owned.reserve(64);
		return s;
	} catch (...) {
		handle_exception("tc_scope_create");
		return nullptr;
	}
}

void tc_scope_reset(tc_scope *s)
{
	if (s == nullptr)
		return;
	try {
		for (tc_tensor *t : s->owned)
			delete t;
	} catch (...) {
		handle_exception("tc_scope_reset");
	}
	s->owned.clear();
}

void tc_scope_destroy(tc_scope *s)
{
	if (s == nullptr)
		return;
	tc_scope_reset(s);
	delete s;
}

void tc_scope_drop(tc_scope *s, tc_tensor *t)
{
	if (s == nullptr || t == nullptr)
		return;
	try {
		for (size_t i = s->owned.size(); i-- > 0;) {
			if (s->owned[i] == t) {
				s->owned[i] = s->owned.back();
				s->owned.pop_back();
				delete t;
				return;
			}
		}
	} catch (...) {
		handle_exception("tc_scope_drop");
	}
}

size_t tc_scope_size(const tc_scope *s)
{
	return s == nullptr ? 0 : s->owned.size();
}

/* --- tensors ------------------------------------------------------------ */

tc_tensor *tc_from_float(tc_scope *s, const float *data, const int64_t *shape,
    int ndim, const char *dev)
{
	return op("tc_from_float", s, [&] {
		std::vector<int64_t> sh = make_shape(shape, ndim);
		c10::Device d = parse_device(dev);
		int64_t n = shape_numel(sh);
		if (n > 0 && data == nullptr)
			fail(TC_EINVAL, "data is NULL");
		if (d.is_cpu()) {
			torch::Tensor t = torch::empty(sh, float_opts(d));
			if (n > 0)
				std::memcpy(t.data_ptr<float>(), data, sizeof(float) * (size_t)n);
			return t;
		}
		torch::Tensor host = torch::from_blob(const_cast<float *>(data), sh,
		    torch::TensorOptions().dtype(torch::kFloat32));
		return host.to(d);
	});
}

tc_tensor *tc_from_u8_as_long(tc_scope *s, const uint8_t *data,
    const int64_t *shape, int ndim, const char *dev)
{
	return op("tc_from_u8_as_long", s, [&] {
		std::vector<int64_t> sh = make_shape(shape, ndim);
		c10::Device d = parse_device(dev);
		if (shape_numel(sh) > 0 && data == nullptr)
			fail(TC_EINVAL, "data is NULL");
		torch::Tensor host = torch::from_blob(const_cast<uint8_t *>(data), sh,
		    torch::TensorOptions().dtype(torch::kUInt8));
		return host.to(torch::TensorOptions().device(d).dtype(torch::kInt64));
	});
}

tc_tensor *tc_zeros(tc_scope *s, const int64_t *shape, int ndim, const char *dev)
{
	return op("tc_zeros", s, [&] {
		std::vector<int64_t> sh = make_shape(shape, ndim);
		return torch::zeros(sh, float_opts(parse_device(dev)));
	});
}

tc_tensor *tc_full(tc_scope *s, const int64_t *shape, int ndim, float value,
    const char *dev)
{
	return op("tc_full", s, [&] {
		std::vector<int64_t> sh = make_shape(shape, ndim);
		return torch::full(sh, value, float_opts(parse_device(dev)));
	});
}

tc_tensor *tc_randn(tc_scope *s, const int64_t *shape, int ndim, float std,
    const char *dev)
{
	return op("tc_randn", s, [&] {
		std::vector<int64_t> sh = make_shape(shape, ndim);
		torch::Tensor t = torch::randn(sh, float_opts(parse_device(dev)));
		if (std != 1.0f)
			t.mul_(static_cast<double>(std));
		return t;
	});
}

void tc_tensor_free(tc_tensor *t)
{
	try {
		delete t;
	} catch (...) {
		handle_exception("tc_tensor_free");
	}
}

tc_status tc_to_float(const tc_tensor *t, float *out, size_t n)
{
	if (t == nullptr) {
		null_input("tc_to_float");
		return TC_EINVAL;
	}
	return guard("tc_to_float", [&] {
		if ((int64_t)n != t->t.numel())
			fail(TC_EINVAL, "buffer holds " + std::to_string(n) +
			    " floats but tensor " + shape_str(t->t) + " has " +
			    std::to_string(t->t.numel()));
		if (n > 0 && out == nullptr)
			fail(TC_EINVAL, "out is NULL");
		torch::Tensor h = host_contiguous(t->t, torch::kFloat32);
		if (n > 0)
			std::memcpy(out, h.data_ptr<float>(), n * sizeof(float));
	});
}

tc_status tc_to_u8(const tc_tensor *t, uint8_t *out, size_t n)
{
	if (t == nullptr) {
		null_input("tc_to_u8");
		return TC_EINVAL;
	}
	return guard("tc_to_u8", [&] {
		const torch::Tensor &x = t->t;
		c10::ScalarType st = x.scalar_type();
		if (st != torch::kBool && !c10::isIntegralType(st, /*includeBool=*/false))
			fail(TC_EINVAL, std::string("tensor has non-integer type ") +
			    c10::toString(st));
		if ((int64_t)n != x.numel())
			fail(TC_EINVAL, "buffer holds " + std::to_string(n) +
			    " bytes but tensor " + shape_str(x) + " has " +
			    std::to_string(x.numel()));
		if (n > 0 && out == nullptr)
			fail(TC_EINVAL, "out is NULL");
		if (n == 0)
			return;
		if (st != torch::kBool && st != torch::kUInt8) {
			torch::Tensor d = x.detach();
			int64_t lo = d.min().item<int64_t>();
			int64_t hi = d.max().item<int64_t>();
			if (lo < 0 || hi > 255)
				fail(TC_EINVAL, "values " + std::to_string(lo) + ".." +
				    std::to_string(hi) + " outside 0..255");
		}
		torch::Tensor h = host_contiguous(x, torch::kUInt8);
		std::memcpy(out, h.data_ptr<uint8_t>(), n);
	});
}

tc_status tc_copy_from_float(tc_tensor *t, const float *data, size_t n)
{
	if (t == nullptr) {
		null_input("tc_copy_from_float");
		return TC_EINVAL;
	}
	return guard("tc_copy_from_float", [&] {
		if ((int64_t)n != t->t.numel())
			fail(TC_EINVAL, "got " + std::to_string(n) + " floats but tensor " +
			    shape_str(t->t) + " has " + std::to_string(t->t.numel()));
		if (n > 0 && data == nullptr)
			fail(TC_EINVAL, "data is NULL");
		if (n == 0)
			return;
		torch::NoGradGuard ng;
		torch::Tensor src = torch::from_blob(const_cast<float *>(data),
		    t->t.sizes(), torch::TensorOptions().dtype(torch::kFloat32));
		t->t.copy_(src);
	});
}

double tc_item(const tc_tensor *t)
{
	if (t == nullptr) {
		null_input("tc_item");
		return std::nan("");
	}
	try {
		if (t->t.numel() != 1)
			fail(TC_EINVAL, "tensor " + shape_str(t->t) + " has " +
			    std::to_string(t->t.numel()) + " elements, not 1");
		return t->t.detach().item<double>();
	} catch (...) {
		handle_exception("tc_item");
		return std::nan("");
	}
}

int tc_ndim(const tc_tensor *t)
{
	if (t == nullptr) {
		null_input("tc_ndim");
		return -1;
	}
	return static_cast<int>(t->t.dim());
}

int64_t tc_size(const tc_tensor *t, int d)
{
	if (t == nullptr) {
		null_input("tc_size");
		return -1;
	}
	int64_t nd = t->t.dim();
	int64_t dd = d < 0 ? d + nd : d;
	if (dd < 0 || dd >= nd) {
		set_err("tc_size", "dimension " + std::to_string(d) +
		    " out of range for " + std::to_string(nd) + "-d tensor");
		return -1;
	}
	return t->t.size(dd);
}

int64_t tc_numel(const tc_tensor *t)
{
	if (t == nullptr) {
		null_input("tc_numel");
		return -1;
	}
	return t->t.numel();
}

int tc_shape(const tc_tensor *t, int64_t *shape)
{
	if (t == nullptr) {
		null_input("tc_shape");
		return -1;
	}
	int64_t nd = t->t.dim();
	if (nd > TC_MAX_DIMS) {
		set_err("tc_shape", "tensor has " + std::to_string(nd) +
		    " dimensions, more than TC_MAX_DIMS");
		return -1;
	}
	if (shape == nullptr) {
		set_err("tc_shape", "shape is NULL");
		return -1;
	}
	for (int64_t i = 0; i < nd; i++)
		shape[i] = t->t.size(i);
	return static_cast<int>(nd);
}

tc_status tc_set_requires_grad(tc_tensor *t, int on)
{
	if (t == nullptr) {
		null_input("tc_set_requires_grad");
		return TC_EINVAL;
	}
	return guard("tc_set_requires_grad", [&] { t->t.requires_grad_(on != 0); });
}

tc_tensor *tc_grad(tc_scope *s, const tc_tensor *t)
{
	if (t == nullptr) {
		null_input("tc_grad");
		return nullptr;
	}
	return op("tc_grad", s, [&] {
		const torch::Tensor &g = t->t.grad();
		if (!g.defined())
			return torch::zeros_like(t->t.detach());
		// A copy: the optimiser may zero or drop the live gradient later.
		return g.detach().clone();
	});
}

tc_status tc_to_device(tc_tensor *t, const char *dev)
{
	if (t == nullptr) {
		null_input("tc_to_device");
		return TC_EINVAL;
	}
	return guard("tc_to_device", [&] {
		c10::Device d = parse_device(dev);
		if (t->t.device() == d)
			return;
		torch::NoGradGuard ng;
		// set_data keeps the TensorImpl (so optimisers built over this
		// tensor still see it) and its requires_grad flag.
		t->t.set_data(t->t.to(d));
		if (t->t.grad().defined())
			t->t.mutable_grad() = torch::Tensor();
	});
}

tc_tensor *tc_to(tc_scope *s, const tc_tensor *t, const char *dev)
{
	if (t == nullptr) {
		null_input("tc_to");
		return nullptr;
	}
	return op("tc_to", s, [&] {
		c10::Device d = parse_device(dev);
		return t->t.to(d, /*non_blocking=*/false, /*copy=*/true);
	});
}

tc_tensor *tc_half(tc_scope *s, const tc_tensor *t)
{
	if (t == nullptr) {
		null_input("tc_half");
		return nullptr;
	}
	return op("tc_half", s, [&] { return t->t.to(torch::kFloat16); });
}

tc_tensor *tc_float(tc_scope *s, const tc_tensor *t)
{
	if (t == nullptr) {
		null_input("tc_float");
		return nullptr;
	}
	return op("tc_float", s, [&] { return t->t.to(torch::kFloat32); });
}

/* --- ops ---------------------------------------------------------------- */

#define TC_NEED1(name, a)                                                      \
	do {                                                                   \
		if ((a) == nullptr) {                                          \
			null_input(name);                                      \
			return nullptr;                                        \
		}                                                              \
	} while (0)
#define TC_NEED2(name, a, b)                                                   \
	do {                                                                   \
		if ((a) == nullptr || (b) == nullptr) {                        \
			null_input(name);                                      \
			return nullptr;                                        \
		}                                                              \
	} while (0)

tc_tensor *tc_conv3d(tc_scope *s, const tc_tensor *x, const tc_tensor *w,
    const tc_tensor *b, int stride, int padding)
{
	TC_NEED2("tc_conv3d", x, w);
	return op("tc_conv3d", s, [&] {
		if (stride < 1 || padding < 0)
			fail(TC_EINVAL, "stride " + std::to_string(stride) +
			    " / padding " + std::to_string(padding) + " invalid");
		std::vector<int64_t> st(3, stride), pd(3, padding), dl(3, 1);
		return torch::conv3d(x->t, w->t, opt_tensor(b), st, pd, dl, 1);
	});
}

tc_tensor *tc_conv_transpose3d(tc_scope *s, const tc_tensor *x,
    const tc_tensor *w, const tc_tensor *b, int stride, int padding)
{
	TC_NEED2("tc_conv_transpose3d", x, w);
	return op("tc_conv_transpose3d", s, [&] {
		if (stride < 1 || padding < 0)
			fail(TC_EINVAL, "stride " + std::to_string(stride) +
			    " / padding " + std::to_string(padding) + " invalid");
		std::vector<int64_t> st(3, stride), pd(3, padding), op0(3, 0), dl(3, 1);
		return torch::conv_transpose3d(x->t, w->t, opt_tensor(b), st, pd, op0,
		    1, dl);
	});
}

tc_tensor *tc_instance_norm(tc_scope *s, const tc_tensor *x,
    const tc_tensor *gamma, const tc_tensor *beta, double eps)
{
	TC_NEED1("tc_instance_norm", x);
	return op("tc_instance_norm", s, [&] {
		if ((gamma == nullptr) != (beta == nullptr))
			fail(TC_EINVAL, "gamma and beta must both be given or both NULL");
		return torch::instance_norm(x->t, opt_tensor(gamma), opt_tensor(beta),
		    torch::Tensor(), torch::Tensor(), /*use_input_stats=*/true,
		    /*momentum=*/0.0, eps, /*cudnn_enabled=*/true);
	});
}

tc_tensor *tc_leaky_relu(tc_scope *s, const tc_tensor *x, double slope)
{
	TC_NEED1("tc_leaky_relu", x);
	return op("tc_leaky_relu", s, [&] { return torch::leaky_relu(x->t, slope); });
}

tc_tensor *tc_leaky_relu_inplace(tc_tensor *x, double slope)
{
	TC_NEED1("tc_leaky_relu_inplace", x);
	try {
		torch::leaky_relu_(x->t, slope);
		return x;
	} catch (...) {
		handle_exception("tc_leaky_relu_inplace");
		return nullptr;
	}
}

namespace {

// One (n, c) plane of tc_instance_norm_lrelu, in place: pass 1 sums
// (x - k) and (x - k)^2 (k = first value, against cancellation) in float
// blocks of 4096 folded into doubles; pass 2 applies scale, shift and the
// leaky ReLU. 16 independent accumulators let the compiler vectorise.
// T is float or c10::BFloat16 (bf16 autocast): the sums are done in float
// and double either way; bf16 values are rounded once, on the store.
// (extern "C++": this part of the file is inside extern "C".)
extern "C++" template <typename T>
__attribute__((optimize("O3"))) void norm_lrelu_plane(T *p, int64_t n,
    float gam, float bet, double eps, float slope)
{
	const float k = static_cast<float>(p[0]);
	double s = 0, ss = 0;
	for (int64_t i0 = 0; i0 < n; i0 += 4096) {
		int64_t e = std::min<int64_t>(n, i0 + 4096), i = i0;
		float a[16] = {0}, q[16] = {0};
		for (; i + 16 <= e; i += 16)
			for (int j = 0; j < 16; j++) {
				float d = static_cast<float>(p[i + j]) - k;
				a[j] += d;
				q[j] += d * d;
			}
		for (; i < e; i++) {
			float d = static_cast<float>(p[i]) - k;
			a[0] += d;
			q[0] += d * d;
		}
		for (int j = 0; j < 16; j++)
			s += a[j], ss += q[j];
	}
	double m = s / (double)n, var = ss / (double)n - m * m;
	if (var < 0)
		var = 0;
	const float scale = (float)(gam / std::sqrt(var + eps));
	const float shift = (float)(bet - (k + m) * (gam / std::sqrt(var + eps)));
	// Branch-free so that it vectorises: max(v,0) + slope * min(v,0).
	for (int64_t i = 0; i < n; i++) {
		float v = static_cast<float>(p[i]) * scale + shift;
		p[i] = static_cast<T>(std::max(v, 0.0f) + slope * std::min(v, 0.0f));
	}
}

}  // namespace

tc_tensor *tc_instance_norm_lrelu(tc_scope *s, tc_tensor *x,
    const tc_tensor *gamma, const tc_tensor *beta, double eps, double slope)
{
	TC_NEED1("tc_instance_norm_lrelu", x);
	if ((gamma == nullptr) != (beta == nullptr)) {
		set_err("tc_instance_norm_lrelu",
		    "gamma and beta must both be given or both NULL");
		return nullptr;
	}
	const torch::Tensor &t = x->t;
	bool fused = !at::GradMode::is_enabled() && t.defined() && t.dim() >= 3 &&
	    t.device().is_cpu() && (t.scalar_type() == torch::kFloat ||
	    t.scalar_type() == torch::kBFloat16) &&
	    t.is_contiguous() && t.numel() > 0;
	for (const tc_tensor *p : {gamma, beta})
		if (p != nullptr && (!p->t.device().is_cpu() ||
		    p->t.scalar_type() != torch::kFloat || p->t.dim() != 1 ||
		    p->t.size(0) != t.size(1)))
			fused = false;
	if (!fused) {
		tc_tensor *n = tc_instance_norm(s, x, gamma, beta, eps);
		return tc_leaky_relu_inplace(n, slope);
	}
	try {
		const int64_t N = t.size(0), C = t.size(1), plane = t.numel() / (N * C);
		torch::Tensor g = gamma ? gamma->t.contiguous() : torch::Tensor();
		torch::Tensor b = beta ? beta->t.contiguous() : torch::Tensor();
		const float *gp = gamma ? g.data_ptr<float>() : nullptr;
		const float *bp = beta ? b.data_ptr<float>() : nullptr;
		auto run = [&](auto *base) {
			at::parallel_for(0, N * C, 1, [&](int64_t lo, int64_t hi) {
				for (int64_t i = lo; i < hi; i++) {
					int64_t c = i % C;
					norm_lrelu_plane(base + i * plane, plane,
					    gp ? gp[c] : 1.0f, bp ? bp[c] : 0.0f,
					    eps, (float)slope);
				}
			});
		};
		if (t.scalar_type() == torch::kBFloat16)
			run(t.data_ptr<c10::BFloat16>());
		else
			run(t.data_ptr<float>());
		return x;
	} catch (...) {
		handle_exception("tc_instance_norm_lrelu");
		return nullptr;
	}
}

tc_tensor *tc_relu(tc_scope *s, const tc_tensor *x)
{
	TC_NEED1("tc_relu", x);
	return op("tc_relu", s, [&] { return torch::relu(x->t); });
}

tc_tensor *tc_sigmoid(tc_scope *s, const tc_tensor *x)
{
	TC_NEED1("tc_sigmoid", x);
	return op("tc_sigmoid", s, [&] { return torch::sigmoid(x->t); });
}

tc_tensor *tc_max_pool3d(tc_scope *s, const tc_tensor *x, int kernel, int stride)
{
	TC_NEED1("tc_max_pool3d", x);
	return op("tc_max_pool3d", s, [&] {
		if (kernel < 1 || stride < 1)
			fail(TC_EINVAL, "kernel " + std::to_string(kernel) + " / stride " +
			    std::to_string(stride) + " invalid");
		std::vector<int64_t> k(3, kernel), st(3, stride);
		return torch::max_pool3d(x->t, k, st);
	});
}

tc_tensor *tc_upsample3d(tc_scope *s, const tc_tensor *x, int factor)
{
	TC_NEED1("tc_upsample3d", x);
	return op("tc_upsample3d", s, [&] {
		if (factor < 1)
			fail(TC_EINVAL, "factor " + std::to_string(factor) + " < 1");
		if (x->t.dim() != 5)
			fail(TC_EINVAL, "input " + shape_str(x->t) + " is not 5-d");
		namespace F = torch::nn::functional;
		double f = factor;
		return F::interpolate(x->t, F::InterpolateFuncOptions()
		    .scale_factor(std::vector<double>{f, f, f})
		    .mode(torch::kTrilinear)
		    .align_corners(false));
	});
}

tc_tensor *tc_cat(tc_scope *s, tc_tensor *const *ts, int n, int dim)
{
	if (ts == nullptr || n < 1) {
		set_err("tc_cat", "no tensors to concatenate");
		return nullptr;
	}
	for (int i = 0; i < n; i++)
		TC_NEED1("tc_cat", ts[i]);
	return op("tc_cat", s, [&] {
		std::vector<torch::Tensor> v;
		v.reserve(n);
		for (int i = 0; i < n; i++)
			v.push_back(ts[i]->t);
		return torch::cat(v, dim);
	});
}

tc_tensor *tc_softmax(tc_scope *s, const tc_tensor *x, int dim)
{
	TC_NEED1("tc_softmax", x);
	return op("tc_softmax", s, [&] { return x->t.softmax(dim); });
}

tc_tensor *tc_log_softmax(tc_scope *s, const tc_tensor *x, int dim)
{
	TC_NEED1("tc_log_softmax", x);
	return op("tc_log_softmax", s, [&] { return x->t.log_softmax(dim); });
}

tc_tensor *tc_cross_entropy(tc_scope *s, const tc_tensor *logits,
    const tc_tensor *target)
{
	TC_NEED2("tc_cross_entropy", logits, target);
	return op("tc_cross_entropy", s, [&] {
		if (target->t.scalar_type() != torch::kInt64)
			fail(TC_EINVAL, std::string("target must be int64, not ") +
			    c10::toString(target->t.scalar_type()));
		return torch::nn::functional::cross_entropy(logits->t, target->t);
	});
}

tc_tensor *tc_one_hot(tc_scope *s, const tc_tensor *target, int num_classes)
{
	TC_NEED1("tc_one_hot", target);
	return op("tc_one_hot", s, [&] {
		if (num_classes < 1)
			fail(TC_EINVAL, "num_classes " + std::to_string(num_classes) + " < 1");
		if (target->t.scalar_type() != torch::kInt64)
			fail(TC_EINVAL, std::string("target must be int64, not ") +
			    c10::toString(target->t.scalar_type()));
		if (target->t.dim() < 1)
			fail(TC_EINVAL, "target must have a batch dimension");
		torch::Tensor oh = torch::one_hot(target->t, num_classes);  // [N,...,C]
		int64_t k = target->t.dim();
		std::vector<int64_t> perm;
		perm.reserve(k + 1);
		perm.push_back(0);
		perm.push_back(k);
		for (int64_t i = 1; i < k; i++)
			perm.push_back(i);
		return oh.permute(perm).to(torch::kFloat32).contiguous();
	});
}

tc_tensor *tc_add(tc_scope *s, const tc_tensor *a, const tc_tensor *b)
{
	TC_NEED2("tc_add", a, b);
	return op("tc_add", s, [&] { return a->t + b->t; });
}

tc_tensor *tc_sub(tc_scope *s, const tc_tensor *a, const tc_tensor *b)
{
	TC_NEED2("tc_sub", a, b);
	return op("tc_sub", s, [&] { return a->t - b->t; });
}

tc_tensor *tc_mul(tc_scope *s, const tc_tensor *a, const tc_tensor *b)
{
	TC_NEED2("tc_mul", a, b);
	return op("tc_mul", s, [&] { return a->t * b->t; });
}

tc_tensor *tc_div(tc_scope *s, const tc_tensor *a, const tc_tensor *b)
{
	TC_NEED2("tc_div", a, b);
	return op("tc_div", s, [&] { return a->t / b->t; });
}

tc_tensor *tc_add_scalar(tc_scope *s, const tc_tensor *a, double v)
{
	TC_NEED1("tc_add_scalar", a);
	return op("tc_add_scalar", s, [&] { return a->t + v; });
}

tc_tensor *tc_mul_scalar(tc_scope *s, const tc_tensor *a, double v)
{
	TC_NEED1("tc_mul_scalar", a);
	return op("tc_mul_scalar", s, [&] { return a->t * v; });
}

tc_tensor *tc_mean(tc_scope *s, const tc_tensor *x)
{
	TC_NEED1("tc_mean", x);
	return op("tc_mean", s, [&] { return x->t.mean(); });
}

tc_tensor *tc_sum(tc_scope *s, const tc_tensor *x)
{
	TC_NEED1("tc_sum", x);
	return op("tc_sum", s, [&] { return x->t.sum(); });
}

tc_tensor *tc_sum_dims(tc_scope *s, const tc_tensor *x, const int64_t *dims,
    int ndims, int keepdim)
{
	TC_NEED1("tc_sum_dims", x);
	return op("tc_sum_dims", s, [&] {
		if (ndims < 1 || ndims > TC_MAX_DIMS || dims == nullptr)
			fail(TC_EINVAL, "bad dims list (" + std::to_string(ndims) + " dims)");
		std::vector<int64_t> d(dims, dims + ndims);
		return x->t.sum(d, keepdim != 0);
	});
}

tc_tensor *tc_argmax(tc_scope *s, const tc_tensor *x, int dim)
{
	TC_NEED1("tc_argmax", x);
	return op("tc_argmax", s, [&] { return x->t.argmax(dim); });
}

tc_tensor *tc_flip(tc_scope *s, const tc_tensor *x, const int64_t *dims, int ndims)
{
	TC_NEED1("tc_flip", x);
	return op("tc_flip", s, [&] {
		if (ndims < 1 || ndims > TC_MAX_DIMS || dims == nullptr)
			fail(TC_EINVAL, "bad dims list (" + std::to_string(ndims) + " dims)");
		std::vector<int64_t> d(dims, dims + ndims);
		return x->t.flip(d);
	});
}

tc_tensor *tc_narrow(tc_scope *s, const tc_tensor *x, int dim, int64_t start,
    int64_t length)
{
	TC_NEED1("tc_narrow", x);
	return op("tc_narrow", s, [&] { return x->t.narrow(dim, start, length); });
}

tc_tensor *tc_reshape(tc_scope *s, const tc_tensor *x, const int64_t *shape, int ndim)
{
	TC_NEED1("tc_reshape", x);
	return op("tc_reshape", s, [&] {
		if (ndim < 0 || ndim > TC_MAX_DIMS || (ndim > 0 && shape == nullptr))
			fail(TC_EINVAL, "bad shape (" + std::to_string(ndim) + " dims)");
		std::vector<int64_t> sh(shape, shape + ndim);
		return x->t.reshape(sh);
	});
}

tc_tensor *tc_detach(tc_scope *s, const tc_tensor *x)
{
	TC_NEED1("tc_detach", x);
	return op("tc_detach", s, [&] { return x->t.detach(); });
}

/* --- autograd ----------------------------------------------------------- */

tc_status tc_backward(tc_tensor *loss)
{
	if (loss == nullptr) {
		null_input("tc_backward");
		return TC_EINVAL;
	}
	return guard("tc_backward", [&] {
		if (loss->t.numel() != 1)
			fail(TC_EINVAL, "loss " + shape_str(loss->t) +
			    " is not a one-element tensor");
		if (!loss->t.requires_grad())
			fail(TC_EINVAL, "loss does not require grad (no parameter "
			    "contributed, or autograd was disabled)");
		loss->t.backward();
	});
}

/* --- optimisers --------------------------------------------------------- */

tc_optim *tc_adam_create(tc_tensor *const *params, int n, double lr,
    double beta1, double beta2, double eps, double weight_decay)
{
	torch::optim::AdamOptions o(lr);
	o.betas(std::make_tuple(beta1, beta2)).eps(eps).weight_decay(weight_decay);
	return optim_create("tc_adam_create", OptKind::Adam, params, n, o);
}

tc_optim *tc_sgd_create(tc_tensor *const *params, int n, double lr,
    double momentum, double weight_decay)
{
	torch::optim::SGDOptions o(lr);
	o.momentum(momentum).weight_decay(weight_decay);
	return optim_create("tc_sgd_create", OptKind::SGD, params, n, o);
}

void tc_optim_destroy(tc_optim *o)
{
	try {
		delete o;
	} catch (...) {
		handle_exception("tc_optim_destroy");
	}
}

tc_status tc_optim_zero_grad(tc_optim *o)
{
	if (o == nullptr) {
		set_err("tc_optim_zero_grad", "optimiser is NULL");
		return TC_EINVAL;
	}
	return guard("tc_optim_zero_grad", [&] {
		// "set to none" on both 1.13 and 2.x (their zero_grad defaults differ).
		for (auto &p : o->params)
			if (p.grad().defined())
				p.mutable_grad() = torch::Tensor();
	});
}

tc_status tc_optim_step(tc_optim *o)
{
	if (o == nullptr) {
		set_err("tc_optim_step", "optimiser is NULL");
		return TC_EINVAL;
	}
	return guard("tc_optim_step", [&] { o->opt->step(); });
}

tc_status tc_optim_set_lr(tc_optim *o, double lr)
{
	if (o == nullptr) {
		set_err("tc_optim_set_lr", "optimiser is NULL");
		return TC_EINVAL;
	}
	return guard("tc_optim_set_lr", [&] {
		if (!(lr >= 0.0))
			fail(TC_EINVAL, "learning rate " + std::to_string(lr) + " < 0");
		for (auto &g : o->opt->param_groups()) {
			if (o->kind == OptKind::Adam)
				static_cast<torch::optim::AdamOptions &>(g.options()).lr(lr);
			else
				static_cast<torch::optim::SGDOptions &>(g.options()).lr(lr);
		}
	});
}

tc_status tc_optim_save(const tc_optim *o, const char *path)
{
	if (o == nullptr || path == nullptr) {
		set_err("tc_optim_save", "optimiser or path is NULL");
		return TC_EINVAL;
	}
	return guard("tc_optim_save", [&] {
		torch::serialize::OutputArchive ar;
		o->opt->save(ar);
		save_archive_atomic(ar, path);
	});
}

tc_status tc_optim_load(tc_optim *o, const char *path)
{
	if (o == nullptr || path == nullptr) {
		set_err("tc_optim_load", "optimiser or path is NULL");
		return TC_EINVAL;
	}
	return guard("tc_optim_load", [&] {
		if (!file_readable(path))
			fail(TC_EIO, std::string("cannot read ") + path + ": " +
			    std::strerror(errno));
		// Load into a fresh optimiser over the same parameters, check it,
		// then swap it in: a bad file leaves `o` untouched.
		auto fresh = make_optimizer(o->kind, o->params,
		    o->opt->param_groups().at(0).options());
		torch::serialize::InputArchive ar;
		try {
			ar.load_from(path, o->params.at(0).device());
		} catch (const c10::Error &e) {
			fail(TC_EIO, std::string("cannot load ") + path + ": " +
			    e.what_without_backtrace());
		}
		try {
			fresh->load(ar);
		} catch (const c10::Error &e) {
			fail(TC_EINVAL, std::string(path) +
			    " does not match this optimiser: " + e.what_without_backtrace());
		}
		for (size_t i = 0; i < o->params.size(); i++) {
			const torch::Tensor &p = o->params[i];
			auto it = find_state(fresh->state(), p);
			if (it == fresh->state().end())
				continue;
			torch::Tensor buf;
			if (o->kind == OptKind::Adam)
				buf = static_cast<torch::optim::AdamParamState &>(*it->second)
				    .exp_avg();
			else
				buf = static_cast<torch::optim::SGDParamState &>(*it->second)
				    .momentum_buffer();
			if (buf.defined() && buf.sizes() != p.sizes())
				fail(TC_EINVAL, std::string(path) + ": state of parameter " +
				    std::to_string(i) + " has shape " + shape_str(buf) +
				    ", parameter has " + shape_str(p));
		}
		o->opt = std::move(fresh);
	});
}

/* --- TorchScript modules ------------------------------------------------ */

tc_module *tc_module_load(const char *path, const char *dev)
{
	try {
		if (path == nullptr)
			fail(TC_EINVAL, "path is NULL");
		c10::Device d = parse_device(dev);
		if (!file_readable(path))
			fail(TC_EIO, std::string("cannot read ") + path + ": " +
			    std::strerror(errno));
		std::unique_ptr<tc_module> m(new tc_module);
		try {
			m->mod = torch::jit::load(path, d);
		} catch (const c10::Error &e) {
			fail(TC_EIO, std::string("cannot load TorchScript ") + path + ": " +
			    e.what_without_backtrace());
		}
		m->mod.eval();
		m->dev = d;
		return m.release();
	} catch (...) {
		handle_exception("tc_module_load");
		return nullptr;
	}
}

void tc_module_destroy(tc_module *m)
{
	try {
		delete m;
	} catch (...) {
		handle_exception("tc_module_destroy");
	}
}

tc_tensor *tc_module_forward(tc_scope *s, tc_module *m, const tc_tensor *x)
{
	TC_NEED1("tc_module_forward", x);
	if (m == nullptr) {
		set_err("tc_module_forward", "module is NULL");
		return nullptr;
	}
	return op("tc_module_forward", s, [&] {
		torch::Tensor in = x->t.device() == m->dev ? x->t : x->t.to(m->dev);
		std::vector<torch::jit::IValue> args;
		args.emplace_back(in);
		torch::jit::IValue out = m->mod.forward(args);
		if (out.isTensor())
			return out.toTensor();
		if (out.isTuple()) {
			auto elems = out.toTuple()->elements();
			if (!elems.empty() && elems[0].isTensor())
				return elems[0].toTensor();
		}
		fail(TC_ETORCH, "module output is not a tensor (or a tuple starting "
		    "with one)");
	});
}

}  // extern "C"

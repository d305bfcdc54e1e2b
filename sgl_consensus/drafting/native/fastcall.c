// The core calls of every drafting step (the trie writes of the committed tokens, the proposal,
// the layout, and after the verify's launch the outcomes the width policy learns from) as CPython
// extension functions.
//
// Why: ctypes converts every argument and finds every array's address through the buffer
// protocol, which costs tens of microseconds per call when the caches are cold, as they are in
// the CPU server after each forward pass; a METH_FASTCALL function that reads NumPy's array
// structs costs about as much as a builtin call (benchmarks/cold_call_costs.py measures both).
//
// What: no state and no logic. Each function checks its arrays (an ndarray, the dtype, C order,
// the size the call needs, writable where the core writes), reads their data pointers and calls
// the core's C function whose address it is handed (binding.py takes it from the ctypes-loaded
// library, so one build of core.cpp serves both paths and ab_core_replay's other builds too).
// A wrong argument is a TypeError or ValueError naming it; nothing is called then.
//
// Built by build.py where Python's and NumPy's headers are found; elsewhere binding.py makes the
// same calls through ctypes (tests/drafting/test_fastcall.py requires identical results).

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <stdint.h>

typedef int64_t (*ExtendRows)(void*, const int32_t*, int32_t, const int64_t*, int64_t, const int64_t*, const double*,
                              int64_t, const int64_t*, double*, int64_t*, int64_t*);
typedef int32_t (*Propose)(void*, const int32_t*, int32_t, int32_t*, int32_t*, int32_t*, int32_t*, double*, int32_t*,
                           const double*, int32_t, const double*, const double*, double*);
typedef int64_t (*Outcomes)(int32_t, int32_t, const int32_t*, const int32_t*, const int32_t*, const double*, int32_t,
                            const int64_t*, int64_t, const int64_t*, int32_t*, double*, uint8_t*);
typedef int32_t (*Layout)(int32_t, int32_t, const int32_t*, const int32_t*, const int32_t*, const int32_t*,
                          const int32_t*, int32_t, const int32_t*, int64_t*, uint8_t*, int64_t*);

static const char* type_name(int type) {
  switch (type) {
    case NPY_INT32: return "int32";
    case NPY_INT64: return "int64";
    case NPY_FLOAT64: return "float64";
    case NPY_BOOL: return "bool";
    default: return "another type";
  }
}

// `value` as a C-ordered array of `type` with `size` elements (-1: any) and `ndim` dimensions
// (-1: any); NULL with an exception naming `name` otherwise.
static PyArrayObject* array_arg(PyObject* value, const char* name, int type, npy_intp size, int ndim, int writable) {
  if (!PyArray_Check(value)) {
    PyErr_Format(PyExc_TypeError, "%s must be a NumPy array, got %s", name, Py_TYPE(value)->tp_name);
    return NULL;
  }
  PyArrayObject* array = (PyArrayObject*)value;
  if (PyArray_TYPE(array) != type || !PyArray_IS_C_CONTIGUOUS(array) || (writable && !PyArray_ISWRITEABLE(array))) {
    PyErr_Format(PyExc_TypeError, "%s must be a C-ordered%s array of %s", name, writable ? ", writable" : "",
                 type_name(type));
    return NULL;
  }
  if ((size >= 0 && PyArray_SIZE(array) != size) || (ndim >= 0 && PyArray_NDIM(array) != ndim)) {
    PyErr_Format(PyExc_ValueError, "%s has shape of size %zd in %d dimensions, the call needs %zd in %d", name,
                 (Py_ssize_t)PyArray_SIZE(array), PyArray_NDIM(array), (Py_ssize_t)size, ndim);
    return NULL;
  }
  return array;
}

static void* pointer_arg(PyObject* value, const char* name) {
  void* pointer = PyLong_AsVoidPtr(value);
  if (pointer == NULL && !PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s is a null pointer", name);
  return pointer;
}

static int count_args(Py_ssize_t given, Py_ssize_t wanted, const char* function) {
  if (given == wanted) return 1;
  PyErr_Format(PyExc_TypeError, "%s takes %zd arguments, got %zd", function, wanted, given);
  return 0;
}

// extend_rows(function, core, requests, tokens, lens, logprobs, counts, out, info, last) -> int:
// sgc_extend_rows (its contract in core.cpp). requests int32 [b]; tokens int64 [b, stride];
// lens, last int64 [b]; logprobs float64 [b, lp_stride] and counts int64 [b], or both None;
// out float64 [1] (the probabilities' sum); info int64 [3].
static PyObject* extend_rows(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!count_args(nargs, 10, "extend_rows")) return NULL;
  ExtendRows function = (ExtendRows)pointer_arg(args[0], "function");
  void* core = pointer_arg(args[1], "core");
  if (PyErr_Occurred()) return NULL;
  PyArrayObject* requests = array_arg(args[2], "requests", NPY_INT32, -1, 1, 0);
  if (!requests) return NULL;
  const npy_intp rows = PyArray_SIZE(requests);
  PyArrayObject* tokens = array_arg(args[3], "tokens", NPY_INT64, -1, 2, 0);
  if (!tokens) return NULL;
  if (PyArray_DIM(tokens, 0) != rows)
    return PyErr_Format(PyExc_ValueError, "tokens must have %zd rows", (Py_ssize_t)rows);
  PyArrayObject* lens = array_arg(args[4], "lens", NPY_INT64, rows, 1, 0);
  PyArrayObject* out = lens ? array_arg(args[7], "out", NPY_FLOAT64, 1, 1, 1) : NULL;
  PyArrayObject* info = out ? array_arg(args[8], "info", NPY_INT64, 3, 1, 1) : NULL;
  PyArrayObject* last = info ? array_arg(args[9], "last", NPY_INT64, rows, 1, 1) : NULL;
  if (!last) return NULL;
  const double* logprobs = NULL;
  const int64_t* counts = NULL;
  int64_t lp_stride = 0;
  if ((args[5] == Py_None) != (args[6] == Py_None))
    return PyErr_Format(PyExc_ValueError, "logprobs and counts go together: pass both or neither");
  if (args[5] != Py_None) {
    PyArrayObject* lp = array_arg(args[5], "logprobs", NPY_FLOAT64, -1, 2, 0);
    if (!lp) return NULL;
    if (PyArray_DIM(lp, 0) != rows)
      return PyErr_Format(PyExc_ValueError, "logprobs must have %zd rows", (Py_ssize_t)rows);
    PyArrayObject* known = array_arg(args[6], "counts", NPY_INT64, rows, 1, 0);
    if (!known) return NULL;
    logprobs = (const double*)PyArray_DATA(lp);
    lp_stride = PyArray_DIM(lp, 1);
    counts = (const int64_t*)PyArray_DATA(known);
  }
  const int64_t result = function(core, (const int32_t*)PyArray_DATA(requests), (int32_t)rows,
                                  (const int64_t*)PyArray_DATA(tokens), PyArray_DIM(tokens, 1),
                                  (const int64_t*)PyArray_DATA(lens), logprobs, lp_stride, counts,
                                  (double*)PyArray_DATA(out), (int64_t*)PyArray_DATA(info),
                                  (int64_t*)PyArray_DATA(last));
  return PyLong_FromLongLong(result);
}

// propose(function, core, requests, block, scores, n, edges, intercepts, slopes, rank_sums) -> int:
// sgc_propose. requests int32 [b]; block int32 [4 * b * n + b] (tokens, parents, depths, labels,
// lengths, as CandidateBatch.empty lays them out); scores float64 [b * n]; edges float64 [m],
// intercepts and slopes [m + 1], rank_sums float64 [max(n - 1, 1)], or all four None.
static PyObject* propose(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!count_args(nargs, 10, "propose")) return NULL;
  Propose function = (Propose)pointer_arg(args[0], "function");
  void* core = pointer_arg(args[1], "core");
  if (PyErr_Occurred()) return NULL;
  const long n = PyLong_AsLong(args[5]);
  if (n == -1 && PyErr_Occurred()) return NULL;
  if (n < 1) return PyErr_Format(PyExc_ValueError, "n must be >= 1, got %ld", n);
  PyArrayObject* requests = array_arg(args[2], "requests", NPY_INT32, -1, 1, 0);
  if (!requests) return NULL;
  const npy_intp batch = PyArray_SIZE(requests), size = batch * n;
  PyArrayObject* block = array_arg(args[3], "block", NPY_INT32, 4 * size + batch, 1, 1);
  PyArrayObject* scores = block ? array_arg(args[4], "scores", NPY_FLOAT64, size, -1, 1) : NULL;
  if (!scores) return NULL;
  const double *edges = NULL, *intercepts = NULL, *slopes = NULL;
  double* rank_sums = NULL;
  npy_intp num_edges = 0;
  if (args[6] != Py_None) {
    PyArrayObject* e = array_arg(args[6], "edges", NPY_FLOAT64, -1, 1, 0);
    if (!e) return NULL;
    num_edges = PyArray_SIZE(e);
    PyArrayObject* i = array_arg(args[7], "intercepts", NPY_FLOAT64, num_edges + 1, 1, 0);
    PyArrayObject* s = i ? array_arg(args[8], "slopes", NPY_FLOAT64, num_edges + 1, 1, 0) : NULL;
    PyArrayObject* r = s ? array_arg(args[9], "rank_sums", NPY_FLOAT64, n > 1 ? n - 1 : 1, 1, 1) : NULL;
    if (!r) return NULL;
    edges = (const double*)PyArray_DATA(e);
    intercepts = (const double*)PyArray_DATA(i);
    slopes = (const double*)PyArray_DATA(s);
    rank_sums = (double*)PyArray_DATA(r);
  }
  int32_t* base = (int32_t*)PyArray_DATA(block);
  const int32_t result = function(core, (const int32_t*)PyArray_DATA(requests), (int32_t)batch, base, base + size,
                                  base + 2 * size, base + 3 * size, (double*)PyArray_DATA(scores), base + 4 * size,
                                  edges, (int32_t)num_edges, intercepts, slopes, rank_sums);
  return PyLong_FromLong(result);
}

// The CandidateBatch block (int32 [4 * b * n + b]) of a stateless call and its n, width and batch b;
// NULL with an exception naming what is wrong (1 <= width <= n, a block size no batch has).
static PyArrayObject* candidate_block(PyObject* block_arg, PyObject* n_arg, PyObject* width_arg, long* n, long* width,
                                      npy_intp* batch) {
  *n = PyLong_AsLong(n_arg);
  *width = *n == -1 && PyErr_Occurred() ? -1 : PyLong_AsLong(width_arg);
  if (PyErr_Occurred()) return NULL;
  if (*n < 1 || *width < 1 || *width > *n) {
    PyErr_Format(PyExc_ValueError, "need 1 <= width <= n, got %ld, %ld", *width, *n);
    return NULL;
  }
  PyArrayObject* block = array_arg(block_arg, "block", NPY_INT32, -1, 1, 0);
  if (!block) return NULL;
  *batch = PyArray_SIZE(block) / (4 * *n + 1);
  if (PyArray_SIZE(block) != (4 * *n + 1) * *batch) {
    PyErr_Format(PyExc_ValueError, "block has a size no batch has");
    return NULL;
  }
  return block;
}

// layout(function, block, n, width, budgets, out, mask) -> int: sgc_layout over a CandidateBatch's
// block (int32 [4 * b * n + b], b = len(block) // (4 * n + 1)); budgets int32 [b] or None; out
// int64 [b * width + (b + 1) * 4] (tokens, label counts, their totals: native_layout's layout);
// mask bool [b * width * width].
static PyObject* layout(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!count_args(nargs, 7, "layout")) return NULL;
  Layout function = (Layout)pointer_arg(args[0], "function");
  if (PyErr_Occurred()) return NULL;
  long n, width;
  npy_intp batch;
  PyArrayObject* block = candidate_block(args[1], args[2], args[3], &n, &width, &batch);
  if (!block) return NULL;
  const npy_intp size = batch * n;
  const int32_t* budgets = NULL;
  if (args[4] != Py_None) {
    PyArrayObject* limits = array_arg(args[4], "budgets", NPY_INT32, batch, 1, 0);
    if (!limits) return NULL;
    budgets = (const int32_t*)PyArray_DATA(limits);
  }
  PyArrayObject* out = array_arg(args[5], "out", NPY_INT64, batch * width + (batch + 1) * 4, 1, 1);
  PyArrayObject* mask = out ? array_arg(args[6], "mask", NPY_BOOL, batch * width * width, -1, 1) : NULL;
  if (!mask) return NULL;
  const int32_t* base = (const int32_t*)PyArray_DATA(block);
  int64_t* tokens = (int64_t*)PyArray_DATA(out);
  const int32_t result = function((int32_t)batch, (int32_t)n, base, base + size, base + 2 * size, base + 3 * size,
                                  base + 4 * size, (int32_t)width, budgets, tokens, (uint8_t*)PyArray_DATA(mask),
                                  tokens + batch * width);
  return PyLong_FromLong(result);
}

// outcomes(function, block, scores, n, width, tokens, lens, rows, out_scores, accepted) -> int:
// sgc_outcomes. block int32 [4 * b * n + b] and scores float64 [b * n] (a CandidateBatch's);
// tokens int64 [b, stride] and lens int64 [b] (what each request committed); rows int32, out_scores
// float64 and accepted bool, each [b * n] (written: the first `result` entries).
static PyObject* outcomes(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (!count_args(nargs, 10, "outcomes")) return NULL;
  Outcomes function = (Outcomes)pointer_arg(args[0], "function");
  if (PyErr_Occurred()) return NULL;
  long n, width;
  npy_intp batch;
  PyArrayObject* block = candidate_block(args[1], args[3], args[4], &n, &width, &batch);
  if (!block) return NULL;
  const npy_intp size = batch * n;
  PyArrayObject* scores = array_arg(args[2], "scores", NPY_FLOAT64, size, -1, 0);
  PyArrayObject* tokens = scores ? array_arg(args[5], "tokens", NPY_INT64, -1, 2, 0) : NULL;
  if (!tokens) return NULL;
  if (PyArray_DIM(tokens, 0) != batch)
    return PyErr_Format(PyExc_ValueError, "tokens must have %zd rows", (Py_ssize_t)batch);
  PyArrayObject* lens = array_arg(args[6], "lens", NPY_INT64, batch, 1, 0);
  PyArrayObject* rows = lens ? array_arg(args[7], "rows", NPY_INT32, size, 1, 1) : NULL;
  PyArrayObject* out_scores = rows ? array_arg(args[8], "out_scores", NPY_FLOAT64, size, 1, 1) : NULL;
  PyArrayObject* accepted = out_scores ? array_arg(args[9], "accepted", NPY_BOOL, size, 1, 1) : NULL;
  if (!accepted) return NULL;
  const int32_t* base = (const int32_t*)PyArray_DATA(block);
  const int64_t result = function((int32_t)batch, (int32_t)n, base, base + size, base + 4 * size,
                                  (const double*)PyArray_DATA(scores), (int32_t)width,
                                  (const int64_t*)PyArray_DATA(tokens), PyArray_DIM(tokens, 1),
                                  (const int64_t*)PyArray_DATA(lens), (int32_t*)PyArray_DATA(rows),
                                  (double*)PyArray_DATA(out_scores), (uint8_t*)PyArray_DATA(accepted));
  return PyLong_FromLongLong(result);
}

static PyMethodDef methods[] = {
    {"extend_rows", (PyCFunction)(void (*)(void))extend_rows, METH_FASTCALL, "sgc_extend_rows"},
    {"propose", (PyCFunction)(void (*)(void))propose, METH_FASTCALL, "sgc_propose"},
    {"layout", (PyCFunction)(void (*)(void))layout, METH_FASTCALL, "sgc_layout"},
    {"outcomes", (PyCFunction)(void (*)(void))outcomes, METH_FASTCALL, "sgc_outcomes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sgc_fastcall", "Fast calls into the draft core.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__sgc_fastcall(void) {
  import_array();
  return PyModule_Create(&module);
}

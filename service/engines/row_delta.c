/*
 * The LoRA delta of a decode step's few adapter rows, added in place to their base outputs: a
 * CPython extension module, `_row_delta`, with one function.
 *
 *     add(x, product, first, rows, per_mask_row, mask, descriptor)
 *
 * `x` is `[rows, in]` (a group's input), `product` `[rows, outputs]` (its base outputs, from torch's
 * GEMM); for each row i from `first` on, and each member m of the group (q, k and v of a decoder
 * layer; o alone):
 *
 *     product[i, out_start:+outs] += ((x[i] @ A_t)[rank_start:+ranks] * mask[(i - first) / per_mask_row]) @ B_m
 *
 * where `A_t` `[in, width]` holds every member's adapters' A matrices transposed, side by side,
 * and `B_m` `[ranks, outs]` member m's scaled B (stored one after another). `mask` (`[.., width]`,
 * or 0) keeps only the rank columns of each row's adapter when the batch has several. Every
 * argument is an int: tensors by address, and `descriptor` the address of an int64 array that
 * holds what does not change between steps (see `enum place`; `row_delta.py` builds it).
 *
 * Why hand-written: what a decode step's few adapter rows cost inside a small model's step is calls
 * and memory, not arithmetic. torch's path computes the rank columns of every row in the group's
 * GEMM (wider by the A rows) and adds the delta with `addmm_` over the whole block-diagonal B, zeros
 * included (two thirds of q/k/v's), behind two strided views: three operator dispatches per group.
 * Here the base GEMM keeps its width, the A product covers the adapter rows alone, only B's blocks
 * are read, and the call is one METH_FASTCALL function taking plain ints (a `ctypes` call costs
 * microseconds more inside a step). bench/lora_step.py times both paths side by side.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum place { IN, OUTPUTS, WIDTH, MEMBERS, A_T, B, LAYOUT }; /* LAYOUT: 4 per member, see below */

/* Two rows per pass over A_t (measured faster than 1, 3, 4 or 8 in a decode step: bench/RESULTS.md,
 * Session 13), sixteen rank columns of each in registers. */
enum { ROW_BLOCK = 2, LANES = 16 };

/* low[j, c0:c0+LANES] = x_j @ a_t[:, c0:c0+LANES] for the ROW_BLOCK rows `xs` (a short block
 * repeats its last row: the repeats are computed and not used), the sums kept in registers. */
static void low_rank_lanes(const float *const xs[ROW_BLOCK], int64_t in, const float *a_t, int64_t width,
                           int64_t c0, float acc[ROW_BLOCK][LANES]) {
    memset(acc, 0, sizeof(float) * ROW_BLOCK * LANES);
    for (int64_t k = 0; k < in; k++) {
        const float *a = a_t + k * width + c0;
        for (int j = 0; j < ROW_BLOCK; j++) {
            const float s = xs[j][k];
            for (int r = 0; r < LANES; r++)
                acc[j][r] += s * a[r];
        }
    }
}

/* `low` `[n, width]`: the rank columns of the n (at most ROW_BLOCK) rows from `x`. */
static void low_rank(const float *x, int64_t n, int64_t in, const float *a_t, int64_t width, float *low) {
    const float *xs[ROW_BLOCK];
    for (int j = 0; j < ROW_BLOCK; j++)
        xs[j] = x + (j < n ? j : n - 1) * in;
    int64_t c0 = 0;
    for (; c0 + LANES <= width; c0 += LANES) {
        float acc[ROW_BLOCK][LANES];
        low_rank_lanes(xs, in, a_t, width, c0, acc);
        for (int64_t j = 0; j < n; j++)
            memcpy(low + j * width + c0, acc[j], sizeof(float) * LANES);
    }
    for (int64_t j = 0; j < n; j++) {
        for (int64_t c = c0; c < width; c++) {
            float sum = 0.0f;
            for (int64_t k = 0; k < in; k++)
                sum += xs[j][k] * a_t[k * width + c];
            low[j * width + c] = sum;
        }
    }
}

/* out[:outs] += (low[:ranks] * row_mask[:ranks]) @ b (`[ranks, outs]`), four rank columns per pass
 * over the block (each output loaded and stored once per four multiply-adds); rank columns whose
 * products are all zero (another adapter's, masked out) are skipped. */
static void add_block(float *restrict out, const float *low, const float *row_mask, int64_t ranks,
                      int64_t outs, const float *restrict b) {
    int64_t k = 0;
    for (; k + 4 <= ranks; k += 4) {
        float s0 = low[k], s1 = low[k + 1], s2 = low[k + 2], s3 = low[k + 3];
        if (row_mask) {
            s0 *= row_mask[k];
            s1 *= row_mask[k + 1];
            s2 *= row_mask[k + 2];
            s3 *= row_mask[k + 3];
        }
        if (s0 == 0.0f && s1 == 0.0f && s2 == 0.0f && s3 == 0.0f)
            continue;
        const float *restrict b0 = b + k * outs;
        const float *restrict b1 = b0 + outs;
        const float *restrict b2 = b1 + outs;
        const float *restrict b3 = b2 + outs;
        for (int64_t j = 0; j < outs; j++)
            out[j] += s0 * b0[j] + s1 * b1[j] + s2 * b2[j] + s3 * b3[j];
    }
    for (; k < ranks; k++) {
        const float s = row_mask ? low[k] * row_mask[k] : low[k];
        if (s == 0.0f)
            continue;
        const float *restrict bk = b + k * outs;
        for (int64_t j = 0; j < outs; j++)
            out[j] += s * bk[j];
    }
}

static void add_lora(const float *x, float *product, int64_t rows, int64_t per_mask_row, const float *mask,
                     const int64_t *d) {
    const int64_t in = d[IN], outputs = d[OUTPUTS], width = d[WIDTH], members = d[MEMBERS];
    const float *a_t = (const float *)(intptr_t)d[A_T];
    const float *b = (const float *)(intptr_t)d[B];
    float low[ROW_BLOCK * width];
    for (int64_t i0 = 0; i0 < rows; i0 += ROW_BLOCK) {
        const int64_t n = rows - i0 < ROW_BLOCK ? rows - i0 : ROW_BLOCK;
        low_rank(x + i0 * in, n, in, a_t, width, low);
        for (int64_t j = 0; j < n; j++) {
            const int64_t i = i0 + j;
            const float *row_mask = mask ? mask + (i / per_mask_row) * width : NULL;
            const float *block = b;
            for (int64_t m = 0; m < members; m++) {
                const int64_t *layout = d + LAYOUT + 4 * m; /* rank start, ranks, output start, outputs */
                add_block(product + i * outputs + layout[2], low + j * width + layout[0],
                          row_mask ? row_mask + layout[0] : NULL, layout[1], layout[3], block);
                block += layout[1] * layout[3];
            }
        }
    }
}

static PyObject *add(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    int64_t v[7];
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "add(x, product, first, rows, per_mask_row, mask, descriptor)");
        return NULL;
    }
    for (int i = 0; i < 7; i++) {
        v[i] = PyLong_AsLongLong(args[i]);
        if (v[i] == -1 && PyErr_Occurred())
            return NULL;
    }
    const int64_t *d = (const int64_t *)(intptr_t)v[6];
    const int64_t first = v[2];
    add_lora((const float *)(intptr_t)v[0] + first * d[IN], (float *)(intptr_t)v[1] + first * d[OUTPUTS],
             v[3] - first, v[4], (const float *)(intptr_t)v[5], d);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"add", (PyCFunction)(void (*)(void))add, METH_FASTCALL, "A decode step's LoRA deltas (row_delta.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_row_delta", NULL, -1, methods};

PyMODINIT_FUNC PyInit__row_delta(void) { return PyModule_Create(&module); }

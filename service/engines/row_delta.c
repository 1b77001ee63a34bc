/*
 * The LoRA delta of a few rows of one product, added in place. `LoraRows` computes each row's
 * rank columns in the same GEMM as its base outputs: row i of `product` holds `outputs` base
 * columns, then `width` rank columns (then perhaps more columns, `columns` in all). The delta is
 * block-diagonal: member m of the group (q, k or v of a decode layer; o alone) owns rank columns
 * [rank_start, rank_start + ranks) and output columns [out_start, out_start + outs), and its B
 * block `[ranks, outs]` (scaled) is stored after the previous member's in `b`. For each row i and
 * member m:
 *
 *     out[i, out_start:+outs] += (low[i, rank_start:+ranks] * mask[i / per_mask_row]) @ B_m
 *
 * `layout` holds (rank_start, ranks, out_start, outs) per member; `mask` (`[rows / per_mask_row,
 * width]`, or NULL) keeps only the rank columns of each row's adapter.
 *
 * Why a hand-written loop: for the 1-16 adapter rows of a decode step, torch's `addmm_` on strided
 * views costs three operator dispatches per group inside a step and multiplies the whole
 * block-diagonal B, zeros included (two thirds of q/k/v's); this loop is one foreign call that
 * reads only the blocks (bench/lora_step.py). Larger products (prefill) stay with torch's GEMM
 * (`service/engines/row_delta.py`). Four rank columns are accumulated per pass over a block, so each
 * output element is loaded and stored once per four multiply-adds; rank columns whose products are
 * all zero (another adapter's, masked out) are skipped.
 */
#include <stdint.h>

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
        float s = row_mask ? low[k] * row_mask[k] : low[k];
        if (s == 0.0f)
            continue;
        const float *restrict bk = b + k * outs;
        for (int64_t j = 0; j < outs; j++)
            out[j] += s * bk[j];
    }
}

void row_delta(float *product, int64_t columns, int64_t rows, int64_t per_mask_row, int64_t outputs,
               int64_t width, const float *b, const int64_t *layout, int64_t members, const float *mask) {
    for (int64_t i = 0; i < rows; i++) {
        float *row = product + i * columns;
        const float *low = row + outputs;
        const float *row_mask = mask ? mask + (i / per_mask_row) * width : 0;
        const float *block = b;
        for (int64_t m = 0; m < members; m++) {
            const int64_t *place = layout + 4 * m;  /* rank_start, ranks, out_start, outs */
            add_block(row + place[2], low + place[0], row_mask ? row_mask + place[0] : 0, place[1],
                      place[3], block);
            block += place[1] * place[3];
        }
    }
}

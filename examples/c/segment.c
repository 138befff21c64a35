/* segvol from C: one-call segmentation of a NIfTI CT into a caller-owned
 * buffer, then the same object through an interactive session.
 *
 *   cc -std=c99 examples/c/segment.c -Iinclude -Ltarget/release -lsegvol_c \
 *      -Wl,-rpath,$PWD/target/release -o segment_c
 *   ./segment_c WEIGHTS CT.nii.gz LABELS.u16 TEXT i0 j0 k0 i1 j1 k1
 *
 * Writes the label map (uint16, file order, i fastest) to LABELS.u16 and
 * checks that the session's mask for the same prompts is the same. Exit
 * status 0 on success, 1 with the engine's message on failure. */

#include <stdio.h>
#include <stdlib.h>

#include "segvol.h"

static int fail(const char *what, SegvolStatus st) {
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)st, segvol_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 11) {
        fprintf(stderr, "usage: %s WEIGHTS CT OUT.u16 TEXT i0 j0 k0 i1 j1 k1\n", argv[0]);
        return 2;
    }
    const char *weights = argv[1], *ct = argv[2], *out = argv[3], *text = argv[4];
    double box[6];
    for (int i = 0; i < 6; i++) box[i] = atof(argv[5 + i]);

    SegvolModel *model = NULL;
    SegvolStatus st = segvol_model_open(weights, 0, &model);
    if (st != SEGVOL_STATUS_OK) return fail("segvol_model_open", st);

    /* The caller owns the buffers: their size comes from the CT's header. */
    size_t dims[3];
    st = segvol_ct_dims(ct, dims);
    if (st != SEGVOL_STATUS_OK) return fail("segvol_ct_dims", st);
    size_t n = dims[0] * dims[1] * dims[2];
    uint16_t *labels = malloc(n * sizeof *labels);
    uint8_t *mask = malloc(n);
    if (!labels || !mask) return 1;

    SegvolPrompts prompts = {0};
    const char *texts[1] = {text};
    prompts.texts = texts;
    prompts.n_texts = 1;
    prompts.boxes = box;
    prompts.n_boxes = 1;
    prompts.zoom_in = 1;
    st = segvol_segment_file(model, ct, &prompts, labels, n, NULL);
    if (st != SEGVOL_STATUS_OK) return fail("segvol_segment_file", st);

    FILE *f = fopen(out, "wb");
    if (!f || fwrite(labels, sizeof *labels, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", out);
        return 1;
    }

    /* The same object, interactively: text, then box. */
    SegvolSession *session = NULL;
    st = segvol_session_new(model, &session);
    if (st != SEGVOL_STATUS_OK) return fail("segvol_session_new", st);
    /* The session keeps the model alive: the handle can go now. */
    segvol_model_free(model);
    st = segvol_session_set_image_file(session, ct);
    if (st != SEGVOL_STATUS_OK) return fail("segvol_session_set_image_file", st);
    st = segvol_session_add_text(session, text);
    if (st != SEGVOL_STATUS_OK) return fail("segvol_session_add_text", st);
    st = segvol_session_add_box(session, box);
    if (st != SEGVOL_STATUS_OK) return fail("segvol_session_add_box", st);

    /* A bad click is an error with a message, and leaves the session as it was. */
    double far[3] = {1e6, 0, 0};
    st = segvol_session_add_point(session, far, 1);
    if (st != SEGVOL_STATUS_PROMPT) {
        fprintf(stderr, "a click outside the volume gave status %d\n", (int)st);
        return 1;
    }
    printf("refused as expected: %s\n", segvol_last_error());

    st = segvol_session_mask(session, mask, n);
    if (st != SEGVOL_STATUS_OK) return fail("segvol_session_mask", st);
    size_t voxels = 0, differ = 0;
    for (size_t i = 0; i < n; i++) {
        voxels += mask[i];
        differ += (mask[i] != 0) != (labels[i] == 1);
    }
    segvol_session_free(session);
    free(labels);
    free(mask);
    printf("%s: %zu voxels of %zu x %zu x %zu; session mask differs in %zu voxels\n", text, voxels,
           dims[0], dims[1], dims[2], differ);
    return differ == 0 ? 0 : 1;
}

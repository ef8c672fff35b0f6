// See include/vlm_decode.h. Conversions follow Pillow (PIL/JpegImagePlugin.py,
// PIL/PngImagePlugin.py, libImaging/Convert.c): gray is replicated, alpha dropped (never
// composited), palettes looked up, 16-bit RGB(A)/LA keep the high byte, 16-bit gray is
// clipped to 255 (Pillow's I;16 → RGB), Adobe CMYK is inverted and CMYK → RGB uses
// Pillow's integer formula.
#include "vlm_decode.h"
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

void vlm_image_free(vlm_image *image) {
    if (image && image->pixels) { free(image->pixels); image->pixels = NULL; }
}

void vlm_decode_buffers_free(vlm_decode_buffers *b) {
    if (!b) return;
    free(b->rgb); free(b->raw); free(b->extra);
    if (b->tj) tjDestroy((tjhandle)b->tj);
    memset(b, 0, sizeof *b);
}

/// At least n bytes in *p (capacity *cap), grown and kept: a job of large images faults in its
/// buffers once, not per image. NULL when out of memory.
static uint8_t *reserve(uint8_t **p, size_t *cap, size_t n) {
    if (n <= *cap) return *p;
    size_t want = n + n / 8;
    uint8_t *q = realloc(*p, want);
    if (!q) return NULL;
    *p = q; *cap = want;
    return q;
}

static vlm_decode_status fail(vlm_image *out, vlm_decode_status s, const char *msg) {
    out->pixels = NULL;
    snprintf(out->message, sizeof out->message, "%s", msg ? msg : "");
    return s;
}

// MARK: - JPEG

/// True when an APP14 "Adobe" marker precedes the first SOS: its CMYK is stored inverted.
static int jpeg_has_adobe_marker(const uint8_t *d, size_t n) {
    size_t i = 2;
    while (i + 4 <= n) {
        if (d[i] != 0xFF) { i++; continue; }
        uint8_t m = d[i + 1];
        if (m == 0xDA || m == 0xD9) break;                       // start of scan / end of image
        if (m == 0xFF) { i++; continue; }                         // fill byte
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { i += 2; continue; }
        size_t len = ((size_t)d[i + 2] << 8) | d[i + 3];
        if (m == 0xEE && len >= 7 && i + 4 + 5 <= n && memcmp(d + i + 4, "Adobe", 5) == 0) return 1;
        i += 2 + len;
    }
    return 0;
}

static inline uint8_t clip8(int v) { return v < 0 ? 0 : (v > 255 ? 255 : (uint8_t)v); }
static inline int muldiv255(int a, int b) { int t = a * b + 128; return ((t >> 8) + t) >> 8; }

/// Pillow's Image.draft(mode, (size, size)) for a JPEG: the largest of 8, 4, 2 (else 1) not above
/// min(width // size, height // size) (PIL/JpegImagePlugin.py, draft).
int vlm_draft_scale(int width, int height, int size) {
    if (size <= 0) return 1;
    int scale = width / size < height / size ? width / size : height / size;
    return scale >= 8 ? 8 : scale >= 4 ? 4 : scale >= 2 ? 2 : 1;
}

static vlm_decode_status decode_jpeg(const uint8_t *data, size_t size, uint64_t max_pixels, int draft,
                                     vlm_decode_buffers *buf, vlm_image *out) {
    snprintf(out->format, sizeof out->format, "jpeg");
    if (!buf->tj) buf->tj = tjInitDecompress();
    tjhandle tj = (tjhandle)buf->tj;
    if (!tj) return fail(out, VLM_DECODE_NO_MEMORY, "cannot start the JPEG decoder");
    int w = 0, h = 0, subsamp = 0, cs = 0;
    if (tjDecompressHeader3(tj, data, (unsigned long)size, &w, &h, &subsamp, &cs) != 0) {
        return fail(out, VLM_DECODE_CORRUPT, tjGetErrorStr2(tj));
    }
    if (w <= 0 || h <= 0) { out->width = w; out->height = h; return fail(out, VLM_DECODE_CORRUPT, "zero-sized JPEG"); }
    // With a draft, the DCT scale libjpeg decodes at (1/2, 1/4, 1/8): the output is
    // ceil(w / s) × ceil(h / s), as TurboJPEG's TJSCALED and Pillow compute it.
    int s = vlm_draft_scale(w, h, draft);
    out->scale = s;
    w = (w + s - 1) / s;
    h = (h + s - 1) / s;
    out->width = w; out->height = h; out->source_bits = 8;
    if ((uint64_t)w * (uint64_t)h > max_pixels) return VLM_DECODE_TOO_LARGE;
    int cmyk = (cs == TJCS_CMYK || cs == TJCS_YCCK);
    int gray = (cs == TJCS_GRAY);
    int pf = cmyk ? TJPF_CMYK : (gray ? TJPF_GRAY : TJPF_RGB);
    int ch = cmyk ? 4 : (gray ? 1 : 3);
    out->source_channels = ch;
    size_t n = (size_t)w * h;
    uint8_t *px = reserve(&buf->rgb, &buf->rgb_capacity, n * 3);
    uint8_t *raw = ch == 3 ? px : reserve(&buf->raw, &buf->raw_capacity, n * ch);
    if (!px || !raw) return fail(out, VLM_DECODE_NO_MEMORY, "out of memory");
    // Default flags: accurate (ISLOW) IDCT and fancy upsampling, as Pillow's libjpeg does.
    // Warnings (e.g. a truncated file that still decodes partly) are errors here: a half-grey
    // image must not pass as a feature vector. RGB goes straight into the output buffer.
    if (tjDecompress2(tj, data, (unsigned long)size, raw, w, 0, h, pf, 0) != 0) {
        return fail(out, VLM_DECODE_CORRUPT, tjGetErrorStr2(tj));
    }
    if (gray) {
        for (size_t i = 0; i < n; i++) px[3 * i] = px[3 * i + 1] = px[3 * i + 2] = raw[i];
    } else if (cmyk) {
        int inverted = jpeg_has_adobe_marker(data, size);
        for (size_t i = 0; i < n; i++) {
            int c = raw[4 * i], m = raw[4 * i + 1], y = raw[4 * i + 2], k = raw[4 * i + 3];
            if (inverted) { c = 255 - c; m = 255 - m; y = 255 - y; k = 255 - k; }
            int nk = 255 - k;
            px[3 * i] = clip8(nk - muldiv255(c, nk));
            px[3 * i + 1] = clip8(nk - muldiv255(m, nk));
            px[3 * i + 2] = clip8(nk - muldiv255(y, nk));
        }
    }
    out->pixels = px;
    return VLM_DECODE_OK;
}

// MARK: - PNG

typedef struct {
    const uint8_t *data;
    size_t size, pos;
    char message[200];
    jmp_buf jump;
} png_reader;

static void png_read_mem(png_structp png, png_bytep dst, png_size_t n) {
    png_reader *r = (png_reader *)png_get_io_ptr(png);
    if (r->pos + n > r->size) png_error(png, "unexpected end of file (truncated PNG)");
    memcpy(dst, r->data + r->pos, n);
    r->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg) {
    png_reader *r = (png_reader *)png_get_error_ptr(png);
    snprintf(r->message, sizeof r->message, "%s", msg);
    longjmp(r->jump, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static vlm_decode_status decode_png(const uint8_t *data, size_t size, uint64_t max_pixels, vlm_decode_buffers *buf,
                                    vlm_image *out) {
    png_reader reader = { data, size, 0, "", {{0}} };
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, png_on_error, png_on_warning);
    if (!png) return fail(out, VLM_DECODE_NO_MEMORY, "cannot start the PNG decoder");
    png_infop info = png_create_info_struct(png);
    png_bytep *volatile rows = NULL;
    snprintf(out->format, sizeof out->format, "png");
    if (!info) { png_destroy_read_struct(&png, NULL, NULL); return fail(out, VLM_DECODE_NO_MEMORY, "out of memory"); }
    if (setjmp(reader.jump)) {
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return fail(out, VLM_DECODE_CORRUPT, reader.message);
    }
    png_set_read_fn(png, &reader, png_read_mem);
    // Pillow ignores CRC errors in ancillary chunks; it fails on critical ones, as libpng does.
    png_set_crc_action(png, PNG_CRC_DEFAULT, PNG_CRC_WARN_DISCARD);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int bits = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
    out->width = (int)w; out->height = (int)h; out->source_bits = bits;
    if ((uint64_t)w * (uint64_t)h > max_pixels) { png_destroy_read_struct(&png, &info, NULL); return VLM_DECODE_TOO_LARGE; }
    int gray16 = (type == PNG_COLOR_TYPE_GRAY && bits == 16);
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (type == PNG_COLOR_TYPE_GRAY && bits < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (bits == 16 && !gray16) png_set_strip_16(png);     // Pillow keeps the high byte
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    out->source_channels = (type == PNG_COLOR_TYPE_PALETTE) ? 3 : ch;
    uint8_t *raw = reserve(&buf->raw, &buf->raw_capacity, rowbytes * h);
    uint8_t *px = reserve(&buf->rgb, &buf->rgb_capacity, (size_t)w * h * 3);
    // What Pillow would resize in a mode of its own (open_clip converts to RGB afterwards).
    uint8_t *extra = NULL;
    if (type == PNG_COLOR_TYPE_PALETTE || (type == PNG_COLOR_TYPE_GRAY && bits == 1)) out->mode = VLM_MODE_NEAREST;
    else if (gray16) out->mode = VLM_MODE_I16;
    else if (ch == 2) out->mode = VLM_MODE_LA;
    else if (ch == 4) out->mode = VLM_MODE_RGBA;
    if (out->mode == VLM_MODE_I16 || out->mode == VLM_MODE_LA || out->mode == VLM_MODE_RGBA) {
        extra = reserve(&buf->extra, &buf->extra_capacity, (size_t)w * h * (gray16 ? 2 : 1));
        if (!extra) { png_destroy_read_struct(&png, &info, NULL); return fail(out, VLM_DECODE_NO_MEMORY, "out of memory"); }
        out->extra = extra;
    }
    rows = malloc(sizeof(png_bytep) * h);
    if (!raw || !px || !rows) { free(rows); png_destroy_read_struct(&png, &info, NULL); return fail(out, VLM_DECODE_NO_MEMORY, "out of memory"); }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = raw + y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    out->scale = 1;
    for (png_uint_32 y = 0; y < h; y++) {
        const uint8_t *src = rows[y];
        uint8_t *dst = px + (size_t)y * w * 3;
        for (png_uint_32 x = 0; x < w; x++) {
            uint8_t r, g, b;
            if (gray16) {
                unsigned v = ((unsigned)src[2 * x] << 8) | src[2 * x + 1];
                r = g = b = v > 255 ? 255 : (uint8_t)v;
                ((uint16_t *)extra)[(size_t)y * w + x] = (uint16_t)v;
            } else if (ch == 1 || ch == 2) {
                r = g = b = src[x * ch];
                if (ch == 2 && extra) extra[(size_t)y * w + x] = src[x * 2 + 1];
            } else {
                r = src[x * ch]; g = src[x * ch + 1]; b = src[x * ch + 2];
                if (ch == 4 && extra) extra[(size_t)y * w + x] = src[x * 4 + 3];
            }
            dst[3 * x] = r; dst[3 * x + 1] = g; dst[3 * x + 2] = b;
        }
    }
    free(rows);
    out->pixels = px;
    return VLM_DECODE_OK;
}

vlm_decode_status vlm_decode_image_into(const uint8_t *data, size_t size, uint64_t max_pixels, int draft_size,
                                        vlm_decode_buffers *buffers, vlm_image *out) {
    memset(out, 0, sizeof *out);
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return decode_jpeg(data, size, max_pixels, draft_size, buffers, out);
    if (size >= 8 && memcmp(data, png_magic, 8) == 0) return decode_png(data, size, max_pixels, buffers, out);
    return fail(out, VLM_DECODE_UNKNOWN_FORMAT, "");
}

vlm_decode_status vlm_decode_image(const uint8_t *data, size_t size, uint64_t max_pixels, vlm_image *out) {
    vlm_decode_buffers b = {0};
    vlm_decode_status s = vlm_decode_image_into(data, size, max_pixels, 0, &b, out);
    if (s == VLM_DECODE_OK) {
        // The image takes the pixel buffer; the rest goes.
        if (out->pixels == b.raw) b.raw = NULL; else b.rgb = NULL;
        out->extra = NULL;   // freed with the buffers
    } else {
        out->pixels = NULL;
    }
    vlm_decode_buffers_free(&b);
    return s;
}

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

static vlm_decode_status fail(vlm_image *out, vlm_decode_status s, const char *msg) {
    vlm_image_free(out);
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

static vlm_decode_status decode_jpeg(const uint8_t *data, size_t size, uint64_t max_pixels, vlm_image *out) {
    snprintf(out->format, sizeof out->format, "jpeg");
    tjhandle tj = tjInitDecompress();
    if (!tj) return fail(out, VLM_DECODE_NO_MEMORY, "cannot start the JPEG decoder");
    int w = 0, h = 0, subsamp = 0, cs = 0;
    if (tjDecompressHeader3(tj, data, (unsigned long)size, &w, &h, &subsamp, &cs) != 0) {
        vlm_decode_status s = fail(out, VLM_DECODE_CORRUPT, tjGetErrorStr2(tj));
        tjDestroy(tj);
        return s;
    }
    out->width = w; out->height = h; out->source_bits = 8;
    if (w <= 0 || h <= 0) { tjDestroy(tj); return fail(out, VLM_DECODE_CORRUPT, "zero-sized JPEG"); }
    if ((uint64_t)w * (uint64_t)h > max_pixels) { tjDestroy(tj); return VLM_DECODE_TOO_LARGE; }
    int cmyk = (cs == TJCS_CMYK || cs == TJCS_YCCK);
    int gray = (cs == TJCS_GRAY);
    int pf = cmyk ? TJPF_CMYK : (gray ? TJPF_GRAY : TJPF_RGB);
    int ch = cmyk ? 4 : (gray ? 1 : 3);
    out->source_channels = ch;
    uint8_t *raw = malloc((size_t)w * h * ch);
    out->pixels = malloc((size_t)w * h * 3);
    if (!raw || !out->pixels) { free(raw); tjDestroy(tj); return fail(out, VLM_DECODE_NO_MEMORY, "out of memory"); }
    // Default flags: accurate (ISLOW) IDCT and fancy upsampling, as Pillow's libjpeg does.
    if (tjDecompress2(tj, data, (unsigned long)size, raw, w, 0, h, pf, 0) != 0) {
        // Warnings (e.g. a truncated file that still decodes partly) are errors here:
        // a half-grey image must not pass as a feature vector.
        vlm_decode_status s = fail(out, VLM_DECODE_CORRUPT, tjGetErrorStr2(tj));
        free(raw);
        tjDestroy(tj);
        return s;
    }
    tjDestroy(tj);
    size_t n = (size_t)w * h;
    uint8_t *px = out->pixels;
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
    } else {
        memcpy(px, raw, n * 3);
    }
    free(raw);
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

static vlm_decode_status decode_png(const uint8_t *data, size_t size, uint64_t max_pixels, vlm_image *out) {
    png_reader reader = { data, size, 0, "", {{0}} };
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, png_on_error, png_on_warning);
    if (!png) return fail(out, VLM_DECODE_NO_MEMORY, "cannot start the PNG decoder");
    png_infop info = png_create_info_struct(png);
    uint8_t *volatile raw = NULL;
    png_bytep *volatile rows = NULL;
    snprintf(out->format, sizeof out->format, "png");
    if (!info) { png_destroy_read_struct(&png, NULL, NULL); return fail(out, VLM_DECODE_NO_MEMORY, "out of memory"); }
    if (setjmp(reader.jump)) {
        free(raw); free(rows);
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
    raw = malloc(rowbytes * h);
    rows = malloc(sizeof(png_bytep) * h);
    if (!raw || !rows) { free(raw); free(rows); png_destroy_read_struct(&png, &info, NULL); return fail(out, VLM_DECODE_NO_MEMORY, "out of memory"); }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = raw + y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    out->pixels = malloc((size_t)w * h * 3);
    if (!out->pixels) { free(raw); free(rows); return fail(out, VLM_DECODE_NO_MEMORY, "out of memory"); }
    uint8_t *px = out->pixels;
    for (png_uint_32 y = 0; y < h; y++) {
        const uint8_t *src = rows[y];
        uint8_t *dst = px + (size_t)y * w * 3;
        for (png_uint_32 x = 0; x < w; x++) {
            uint8_t r, g, b;
            if (gray16) {
                unsigned v = ((unsigned)src[2 * x] << 8) | src[2 * x + 1];
                r = g = b = v > 255 ? 255 : (uint8_t)v;
            } else if (ch == 1 || ch == 2) {
                r = g = b = src[x * ch];
            } else {
                r = src[x * ch]; g = src[x * ch + 1]; b = src[x * ch + 2];
            }
            dst[3 * x] = r; dst[3 * x + 1] = g; dst[3 * x + 2] = b;
        }
    }
    free(raw); free(rows);
    return VLM_DECODE_OK;
}

vlm_decode_status vlm_decode_image(const uint8_t *data, size_t size, uint64_t max_pixels, vlm_image *out) {
    memset(out, 0, sizeof *out);
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return decode_jpeg(data, size, max_pixels, out);
    if (size >= 8 && memcmp(data, png_magic, 8) == 0) return decode_png(data, size, max_pixels, out);
    return fail(out, VLM_DECODE_UNKNOWN_FORMAT, "");
}

// Decoding JPEG (TurboJPEG) and PNG (libpng) to 8-bit RGB exactly as Pillow's
// Image.open(...).convert("RGB") produces it. C because libpng reports errors by longjmp,
// which must never cross Swift frames.
#ifndef VLM_DECODE_H
#define VLM_DECODE_H
#include <stddef.h>
#include <stdint.h>

typedef enum {
    VLM_DECODE_OK = 0,
    VLM_DECODE_UNKNOWN_FORMAT = 1,   // neither JPEG nor PNG magic bytes
    VLM_DECODE_CORRUPT = 2,          // the codec rejected the data (message in `message`)
    VLM_DECODE_TOO_LARGE = 3,        // width × height above max_pixels (width/height are set)
    VLM_DECODE_NO_MEMORY = 4,
} vlm_decode_status;

/// The Pillow mode a file opens in, where converting to RGB after a resize (open_clip's order)
/// differs from converting first: Pillow resizes "P" and "1" with NEAREST, "RGBA" and "LA"
/// premultiplied by alpha, "I;16" in 16 bits.
typedef enum {
    VLM_MODE_RGB = 0,       // RGB, L, CMYK…: resizing before or after the conversion agrees
    VLM_MODE_NEAREST = 1,   // a palette ("P") or 1-bit gray ("1") PNG
    VLM_MODE_RGBA = 2,      // extra: the alpha plane, width × height bytes
    VLM_MODE_LA = 3,        // extra: the alpha plane
    VLM_MODE_I16 = 4,       // extra: the 16-bit gray values, width × height native uint16
} vlm_pillow_mode;

typedef struct {
    uint8_t *pixels;       // width × height × 3 RGB (vlm_decode_image: malloc'ed, free with
                           // vlm_image_free; vlm_decode_image_into: inside the buffers)
    int width, height;
    int source_channels;   // channels in the file (1 gray, 2 gray+alpha, 3, 4 RGBA or CMYK)
    int source_bits;       // 8 or 16 (PNG), 8 (JPEG)
    int scale;             // the DCT scale a draft decoded a JPEG at (1, 2, 4, 8)
    char format[8];        // "jpeg" or "png"
    int mode;              // vlm_pillow_mode
    const uint8_t *extra;  // vlm_decode_image_into only (inside the buffers): see vlm_pillow_mode
    char message[200];     // on failure, the codec's own words
} vlm_image;

/// Buffers a decoder keeps between images (one set per thread): grown as needed, never
/// shrunk, so decoding many large images allocates and page-faults once. Zero-initialise;
/// release with vlm_decode_buffers_free.
typedef struct {
    uint8_t *rgb; size_t rgb_capacity;
    uint8_t *raw; size_t raw_capacity;
    uint8_t *extra; size_t extra_capacity;
    void *tj;              // the TurboJPEG handle
} vlm_decode_buffers;

void vlm_decode_buffers_free(vlm_decode_buffers *buffers);

/// Decodes `data` (JPEG or PNG) into `buffers`: out->pixels points into them, valid until the
/// next call with the same buffers. Refuses images over `max_pixels` (after the draft scale)
/// before decoding. draft_size > 0 decodes a JPEG at the DCT scale Pillow's
/// Image.draft("RGB", (draft_size, draft_size)) picks (see vlm_draft_scale); PNGs ignore it.
vlm_decode_status vlm_decode_image_into(const uint8_t *data, size_t size, uint64_t max_pixels, int draft_size,
                                        vlm_decode_buffers *buffers, vlm_image *out);

/// The same into freshly allocated pixels that `out` owns (free with vlm_image_free).
vlm_decode_status vlm_decode_image(const uint8_t *data, size_t size, uint64_t max_pixels, vlm_image *out);

/// Pillow's draft scale for a width × height JPEG and a requested size (1, 2, 4 or 8).
int vlm_draft_scale(int width, int height, int size);

void vlm_image_free(vlm_image *image);

#endif

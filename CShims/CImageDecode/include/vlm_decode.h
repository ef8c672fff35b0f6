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

typedef struct {
    uint8_t *pixels;       // width × height × 3 RGB, malloc'ed; free with vlm_image_free
    int width, height;
    int source_channels;   // channels in the file (1 gray, 2 gray+alpha, 3, 4 RGBA or CMYK)
    int source_bits;       // 8 or 16 (PNG), 8 (JPEG)
    char format[8];        // "jpeg" or "png"
    char message[200];     // on failure, the codec's own words
} vlm_image;

/// Decodes `data` (JPEG or PNG) into `out`; refuses images over `max_pixels` before decoding.
vlm_decode_status vlm_decode_image(const uint8_t *data, size_t size, uint64_t max_pixels, vlm_image *out);

void vlm_image_free(vlm_image *image);

#endif

// JPEG decoding through libjpeg-turbo's libjpeg API, with the settings PIL's
// JpegDecode.c uses (the library's defaults: the accurate integer IDCT, "fancy"
// chroma upsampling, block smoothing), so the pixels are PIL's and torchvision's.
// Scaled decoding (scale_denom 2, 4, 8) is what PIL's `Image.draft` does.
//
// The convention (as the project's other shims): every entry point returns
// CLIP_JPEG_OK (0) or CLIP_JPEG_ERR (-1) and copies a failure's message into the
// caller's buffer `err` of `err_len` bytes. libjpeg reports errors by calling
// `error_exit`, which here longjmps back into the entry point that called it:
// the jump never crosses a Rust frame.
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#define CLIP_JPEG_OK 0
#define CLIP_JPEG_ERR (-1)

struct clip_error {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  // Set by a "premature end of data" warning: the file is truncated (PIL raises
  // "image file is truncated" there too).
  int truncated;
};

struct clip_jpeg {
  struct jpeg_decompress_struct cinfo;
  struct clip_error err;
  int started;
};

static void set_error(char *buf, int len, const char *text) {
  if (buf != NULL && len > 0) {
    strncpy(buf, text, (size_t)len - 1);
    buf[len - 1] = 0;
  }
}

static void copy_message(j_common_ptr cinfo, char *buf, int len) {
  char text[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, text);
  set_error(buf, len, text);
}

static void on_error_exit(j_common_ptr cinfo) {
  struct clip_error *e = (struct clip_error *)cinfo->err;
  longjmp(e->jump, 1);
}

// Warnings (level -1) are counted, not printed; a premature end is remembered.
static void on_emit_message(j_common_ptr cinfo, int level) {
  struct clip_error *e = (struct clip_error *)cinfo->err;
  if (level < 0) {
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) e->truncated = 1;
    cinfo->err->num_warnings++;
  }
}

static void on_output_message(j_common_ptr cinfo) { (void)cinfo; }

// Reads the header of `data` into a new decoder: `width` and `height` of the
// stored image, `components` (1 grey, 3 colour, 4 CMYK / YCCK).
int clip_jpeg_open(const unsigned char *data, unsigned long len, void **out, int *width, int *height,
                   int *components, char *err, int err_len) {
  struct clip_jpeg *j = (struct clip_jpeg *)calloc(1, sizeof(struct clip_jpeg));
  if (j == NULL) {
    set_error(err, err_len, "out of memory");
    return CLIP_JPEG_ERR;
  }
  j->cinfo.err = jpeg_std_error(&j->err.pub);
  j->err.pub.error_exit = on_error_exit;
  j->err.pub.emit_message = on_emit_message;
  j->err.pub.output_message = on_output_message;
  if (setjmp(j->err.jump)) {
    copy_message((j_common_ptr)&j->cinfo, err, err_len);
    jpeg_destroy_decompress(&j->cinfo);
    free(j);
    return CLIP_JPEG_ERR;
  }
  jpeg_create_decompress(&j->cinfo);
  jpeg_mem_src(&j->cinfo, data, len);
  jpeg_read_header(&j->cinfo, TRUE);
  *width = (int)j->cinfo.image_width;
  *height = (int)j->cinfo.image_height;
  *components = j->cinfo.num_components;
  *out = j;
  return CLIP_JPEG_OK;
}

// Starts decoding at 1 / `denom` (1, 2, 4 or 8) of each side: `width` and
// `height` of the output, `channels` per pixel (1 grey, 3 RGB, 4 CMYK as stored,
// which Adobe's convention inverts).
int clip_jpeg_start(void *handle, int denom, int *width, int *height, int *channels, char *err,
                    int err_len) {
  struct clip_jpeg *j = (struct clip_jpeg *)handle;
  if (setjmp(j->err.jump)) {
    copy_message((j_common_ptr)&j->cinfo, err, err_len);
    return CLIP_JPEG_ERR;
  }
  switch (j->cinfo.jpeg_color_space) {
  case JCS_GRAYSCALE:
    j->cinfo.out_color_space = JCS_GRAYSCALE;
    break;
  case JCS_CMYK:
  case JCS_YCCK:
    j->cinfo.out_color_space = JCS_CMYK;
    break;
  default:
    j->cinfo.out_color_space = JCS_RGB;
  }
  if (denom > 1) {
    j->cinfo.scale_num = 1;
    j->cinfo.scale_denom = (unsigned int)denom;
  }
  jpeg_start_decompress(&j->cinfo);
  j->started = 1;
  *width = (int)j->cinfo.output_width;
  *height = (int)j->cinfo.output_height;
  *channels = j->cinfo.output_components;
  return CLIP_JPEG_OK;
}

// Decodes every row into `out` (`width x height x channels` bytes, the sizes
// clip_jpeg_start gave). A truncated file is an error.
int clip_jpeg_read(void *handle, unsigned char *out, unsigned long out_len, char *err, int err_len) {
  struct clip_jpeg *j = (struct clip_jpeg *)handle;
  if (setjmp(j->err.jump)) {
    copy_message((j_common_ptr)&j->cinfo, err, err_len);
    return CLIP_JPEG_ERR;
  }
  size_t stride = (size_t)j->cinfo.output_width * (size_t)j->cinfo.output_components;
  if ((unsigned long)(stride * j->cinfo.output_height) > out_len) {
    set_error(err, err_len, "the output buffer is too small");
    return CLIP_JPEG_ERR;
  }
  while (j->cinfo.output_scanline < j->cinfo.output_height) {
    JSAMPROW row = out + stride * j->cinfo.output_scanline;
    jpeg_read_scanlines(&j->cinfo, &row, 1);
  }
  if (j->err.truncated) {
    set_error(err, err_len, "premature end of JPEG data: the file is truncated");
    return CLIP_JPEG_ERR;
  }
  jpeg_finish_decompress(&j->cinfo);
  j->started = 0;
  if (j->err.truncated) {
    set_error(err, err_len, "premature end of JPEG data: the file is truncated");
    return CLIP_JPEG_ERR;
  }
  return CLIP_JPEG_OK;
}

// Frees a decoder of clip_jpeg_open (also one that failed half-way).
void clip_jpeg_close(void *handle) {
  struct clip_jpeg *j = (struct clip_jpeg *)handle;
  if (j == NULL) return;
  if (!setjmp(j->err.jump)) {
    if (j->started) jpeg_abort_decompress(&j->cinfo);
  }
  jpeg_destroy_decompress(&j->cinfo);
  free(j);
}

// The libjpeg-turbo version this was built against, e.g. 2001005 for 2.1.5.
int clip_jpeg_version(void) {
#ifdef LIBJPEG_TURBO_VERSION_NUMBER
  return LIBJPEG_TURBO_VERSION_NUMBER;
#else
  return 0;
#endif
}

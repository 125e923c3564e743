// Writes the JPEG flavours PIL cannot write, for scripts/gen_jpeg_fixtures.py:
// YCCK (a CMYK image stored as YCCK, with Adobe's marker) and arithmetic-coded.
//
//   jpeg_flavours ycck|arith WIDTH HEIGHT RAW OUT.jpg
//
// RAW holds WIDTH x HEIGHT pixels, 4 bytes each (inverted CMYK, as PIL's "CMYK;I"
// encoder hands libjpeg) for ycck, 3 (RGB) for arith. Built against the
// system's libjpeg-turbo: cc jpeg_flavours.c -ljpeg.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: jpeg_flavours ycck|arith WIDTH HEIGHT RAW OUT.jpg\n");
    return 2;
  }
  int ycck = strcmp(argv[1], "ycck") == 0;
  int w = atoi(argv[2]), h = atoi(argv[3]);
  int comps = ycck ? 4 : 3;
  FILE *in = fopen(argv[4], "rb");
  FILE *out = fopen(argv[5], "wb");
  if (!in || !out) {
    perror("open");
    return 1;
  }
  unsigned char *px = malloc((size_t)w * h * comps);
  if (fread(px, 1, (size_t)w * h * comps, in) != (size_t)w * h * comps) {
    fprintf(stderr, "short raw file\n");
    return 1;
  }
  struct jpeg_compress_struct c;
  struct jpeg_error_mgr e;
  c.err = jpeg_std_error(&e);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, out);
  c.image_width = w;
  c.image_height = h;
  c.input_components = comps;
  c.in_color_space = ycck ? JCS_CMYK : JCS_RGB;
  jpeg_set_defaults(&c);
  if (ycck) {
    jpeg_set_colorspace(&c, JCS_YCCK);
  } else {
    c.arith_code = TRUE;
  }
  jpeg_set_quality(&c, 90, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = px + (size_t)c.next_scanline * w * comps;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  fclose(out);
  fclose(in);
  free(px);
  return 0;
}

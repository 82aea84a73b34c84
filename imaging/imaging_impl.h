/* imaging_impl.h - private helpers shared by the imaging room's files.
 * Not for use outside imaging/. */
#ifndef FEDSEG_IMAGING_IMPL_H
#define FEDSEG_IMAGING_IMPL_H

#include "imaging.h"

/* Copies src's header and path into dst (data NULL); dst freed with
 * img_volume_free. */
int img_volume_header_copy(const img_volume *src, img_volume *dst);

#endif

/* scan.h - private to imaging/: the case list that dataset discovery
 * builds (dataset.c) and the layout readers fill (layouts.c). */
#ifndef FEDSEG_IMAGING_SCAN_H
#define FEDSEG_IMAGING_SCAN_H

#include "imaging.h"

#include <sys/types.h>

/* Slots of a case during discovery: the four modalities, label, mask. */
enum { SLOT_LABEL = IMG_NMOD, SLOT_MASK = IMG_NMOD + 1, SLOT_N };

typedef struct {
	char *id;
	char *file[SLOT_N];
	char *dupfile[SLOT_N]; /* a second candidate for the slot */
	int dup[SLOT_N];       /* more than one candidate for the slot */
	int vol[IMG_NMOD];     /* img_case_ref.volume */
	int label_conv;
	int prenormalised;
	char *where;           /* folder or manifest, for messages */
} scan_case;

typedef struct {
	scan_case *v;
	int n, cap;
	/* folders already visited (symlink loops, repeated links) */
	dev_t *dev;
	ino_t *ino;
	int nvis, capvis;
	img_skip *skip;
	int nskip, capskip;
	unsigned layouts;      /* SCAN_L_* bits of the readers that found cases */
} scan_list;

enum { SCAN_L_BRATS = 1, SCAN_L_DEEPMEDIC = 2, SCAN_L_FWTAR = 4,
	SCAN_L_FWSYNC = 8, SCAN_L_BIDS = 16, SCAN_L_MSD = 32 };

scan_case *scan_get(scan_list *l, const char *id, const char *where);
int scan_set(scan_case *c, int slot, const char *path);
/* Records a skipped entry (copies the strings); -1 on out of memory. */
int scan_skip(scan_list *l, const char *path, const char *id,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
int scan_has_nii_ext(const char *name, size_t *stem);
/* Lists a folder's non-hidden entries: regular files (symlinks
 * followed) into *files and folders into *dirs, sorted; free with
 * scan_names_free. */
int scan_list_dir(const char *dir, char ***files, int *nf, char ***dirs,
    int *nd);
void scan_names_free(char **v, int n);
/* 1 if `dir`'s files hold a BraTS / DeepMedic case (two or more slots of
 * one id), so that the folder is a case rather than a Flywheel
 * acquisition. */
int scan_is_brats_folder(char **files, int nf);

/* Layout readers (layouts.c). Each is given a folder recognised as its
 * layout's root (or a Flywheel session) and adds cases / skips. */
int scan_msd(scan_list *l, const char *dir);
int scan_fw_sync(scan_list *l, const char *project_dir);
int scan_bids(scan_list *l, const char *dir);
/* A folder whose child folders look like Flywheel acquisitions (tar
 * download): returns 1 and adds its case, 0 if it is not such a
 * session, -1 on error. */
int scan_fw_tar_session(scan_list *l, const char *dir, char **dirs, int nd,
    char **files, int nf);

#endif

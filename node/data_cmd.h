/* data_cmd.h - `fedseg data scan|phantom`. */
#ifndef FEDSEG_DATA_CMD_H
#define FEDSEG_DATA_CMD_H
int data_main(int argc, char **argv);
#endif

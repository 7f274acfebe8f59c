// Drops events whose `level` is exactly the string "DEBUG".
export const fields = ["level"];

export function filter(event) {
  return !event.strEq("level", "DEBUG");
}
